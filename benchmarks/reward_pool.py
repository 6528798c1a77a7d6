"""Reward scoring time per RL step: one sample per reward call (the pool before it batched) against chunks.

The demo's workload: the demo config's rewards (configs/demo.yaml; rewards.rewards, default `auto`) on
the bootstrap model's own samples. `--model` generates `--steps` training batches as the demo does
(train.prompts_per_step prompts x rollout.samples_per_prompt samples from the model's train split, at
the demo's training sampling) and saves them (`--save`); `--batch FILE` scores a saved batch instead.
Each round scores every step's batch with `rewards.batch_size=1` (before) and with the configured
`rewards.batch_size` (after), the two in alternating order so load from other processes hits both
alike; each pool is warmed up first (its verifier processes started). The round with the median ratio
is reported.

    .venv/bin/python benchmarks/reward_pool.py --model runs/bootstrap [--steps 8 --rounds 3]

The last line printed is JSON with `ratio` = before seconds per step / after seconds per step.
Measured on the 2-core dev box (demo bootstrap, 8 steps of 16 x 8 samples, `auto`): 0.43 -> 0.063
s/step, ratio 6.8 (rounds 6.1-7.3). It comes from fewer calls (82 against 5248 over the rounds) and
from each chunk verifying each distinct answer or program once (47% of the completions are distinct).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate_batches(cfg, model: str, steps: int) -> list[list[dict]]:
    """`steps` training batches of `model`'s samples, drawn as the loop draws them (orchestration.step)."""
    from dualmode_rl.orchestration.batch_builder import reward_inputs
    from dualmode_rl.orchestration.components import build_local_engine
    from dualmode_rl.orchestration.data import load_prompts, request_for
    from dualmode_rl.orchestration.sampler import PromptSampler

    dataset = load_prompts(cfg, model, "train")
    sampler = PromptSampler(len(dataset), cfg.train.seed)
    engine = build_local_engine(cfg, model)
    batches = []
    try:
        for step in range(1, steps + 1):
            rows = [dataset[i] for i in sampler.next(cfg.train.prompts_per_step)]
            groups = engine.generate([request_for(r, n=cfg.rollout.samples_per_prompt) for r in rows],
                                     seed=cfg.train.seed * 1_000_003 + step)
            batches.append([asdict(item) for item in reward_inputs(groups, rows)])
    finally:
        engine.shutdown()
    return batches


def score_steps(pool, batches) -> float:
    """Seconds per step to score every batch."""
    started = time.perf_counter()
    for batch in batches:
        pool.score(batch)
    return (time.perf_counter() - started) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", help="bootstrap checkpoint folder (holds data/) to sample from")
    parser.add_argument("--batch", type=Path, help="a batch saved by --save, scored instead of sampling")
    parser.add_argument("--save", type=Path, help="where to save the sampled batch (JSON)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="key.sub=value config overrides")
    args = parser.parse_args()
    if not (args.model or args.batch):
        parser.error("give --model (to sample a batch) or --batch (a saved one)")

    from dualmode_rl.orchestration.components import build_reward_pool
    from dualmode_rl.orchestration.config import load_config
    from dualmode_rl.rewards.types import RewardInput

    cfg = load_config(args.config, args.overrides)
    if args.batch:
        batches = json.loads(args.batch.read_text())
    else:
        batches = generate_batches(cfg, args.model, args.steps)
        if args.save:
            args.save.write_text(json.dumps(batches))
    batches = [[RewardInput(**item) for item in batch] for batch in batches]
    before_cfg = cfg.model_copy(deep=True)
    before_cfg.rewards.batch_size = 1
    pools = {"before": build_reward_pool(before_cfg), "after": build_reward_pool(cfg)}
    rounds = []
    try:
        for pool in pools.values():
            pool.score(batches[0])  # one step, counted nowhere: starts the verifiers' worker processes
        for r in range(args.rounds):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            seconds = {name: score_steps(pools[name], batches) for name in order}
            rounds.append({**{f"{k}_seconds_per_step": round(v, 4) for k, v in seconds.items()},
                           "ratio": round(seconds["before"] / seconds["after"], 3)})
            print(f"round {r}: one sample per call {seconds['before']:.3f} s/step, chunks of "
                  f"{cfg.rewards.batch_size} {seconds['after']:.3f} s/step; ratio {rounds[-1]['ratio']:.3f}", flush=True)
        calls = {name: dict(pool.calls) for name, pool in pools.items()}
    finally:
        for pool in pools.values():
            pool.close()
    median = sorted(rounds, key=lambda m: m["ratio"])[len(rounds) // 2]
    samples = [item for batch in batches for item in batch]
    distinct = len({(i.reference.get("id"), i.mode, i.completion) for i in samples})
    print(json.dumps({"steps": len(batches), "samples_per_step": len(batches[0]), "rounds": args.rounds,
                      "rewards": [s.name for s in cfg.rewards.rewards], "batch_size": cfg.rewards.batch_size,
                      "num_workers": cfg.rewards.num_workers, "distinct_completions": round(distinct / len(samples), 3),
                      "domains": {d: sum(i.reference.get("domain") == d for i in samples) for d in ("math", "code")},
                      "ratios": [m["ratio"] for m in rounds], "calls": calls, **median}))


if __name__ == "__main__":
    main()
