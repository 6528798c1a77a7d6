"""vLLM's engine core in the engine's own process (`rollout.in_process`, the CPU default) against a
process of its own (vLLM's default, kept on GPUs): engine start and generation, side by side.

Each round starts one fresh Python process per setting, in turn (the setting is per process), so load
from other jobs hits both alike. A process starts a `VllmEngine` on a bootstrap checkpoint and
samples every prompt of its test split in both modes, `--samples` each, at the demo's training
settings (T=1, 96 / 64 tokens), with one fixed seed. Printed per round, then the medians and their
ratios (separate / in-process; above 1: in-process is faster), and whether each setting gave the same
tokens in every round.

    .venv/bin/python benchmarks/engine_process.py --model runs/bootstrap [--prompts 120 --rounds 2]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(model: str, in_process: bool, prompts: int, samples: int) -> dict:
    from datasets import load_from_disk

    from dualmode_rl.constants import NON_REASONING, REASONING
    from dualmode_rl.rollout.modes import ModeSampling, SamplingConfig
    from dualmode_rl.rollout.types import GenerationRequest
    from dualmode_rl.rollout.vllm_engine import VllmEngine

    rows = load_from_disk(str(Path(model) / "data"))["test"]
    rows = rows.select(range(min(prompts, len(rows))))
    sampling = SamplingConfig(seed=0, reasoning=ModeSampling(1.0, 1.0, 96), non_reasoning=ModeSampling(1.0, 1.0, 64))
    started = time.monotonic()
    engine = VllmEngine(model, sampling, max_model_len=512, seed=0, in_process=in_process)
    ready = time.monotonic()
    requests = [GenerationRequest.for_row(row, f"{i}:{mode}", mode, samples)
                for i, row in enumerate(rows) for mode in (REASONING, NON_REASONING)]
    groups = engine.generate(requests, seed=0)
    done = time.monotonic()
    engine.shutdown()
    tokens = [list(s.token_ids) for g in groups for s in g.samples]
    return {"start_s": ready - started, "generate_s": done - ready, "tokens": sum(map(len, tokens)),
            "fingerprint": hashlib.sha256(str(tokens).encode()).hexdigest()}


def run_child(args, in_process: bool) -> dict:
    command = [sys.executable, __file__, "--model", str(args.model), "--prompts", str(args.prompts),
               "--samples", str(args.samples), "--child", "inline" if in_process else "separate"]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"child ({'in process' if in_process else 'separate'}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True, help="bootstrap checkpoint folder (holds data/)")
    parser.add_argument("--prompts", type=int, default=120)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["inline", "separate"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(str(args.model), args.child == "inline", args.prompts, args.samples)))
        return
    results = {"separate": [], "in_process": []}
    for r in range(args.rounds):
        for name, in_process in (("separate", False), ("in_process", True)):
            m = run_child(args, in_process)
            results[name].append(m)
            print(f"round {r} {name:10s} start {m['start_s']:5.1f} s  generate {m['generate_s']:5.1f} s  "
                  f"{m['tokens'] / m['generate_s']:6.0f} tokens/s", flush=True)
    med = {name: {key: statistics.median(m[key] for m in ms) for key in ("start_s", "generate_s")}
           for name, ms in results.items()}
    summary = {
        "start_ratio": med["separate"]["start_s"] / med["in_process"]["start_s"],
        "generate_ratio": med["separate"]["generate_s"] / med["in_process"]["generate_s"],
        "same_tokens_every_round": {name: len({m["fingerprint"] for m in ms}) == 1 for name, ms in results.items()},
        "medians": med,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
