"""Throughput of RolloutPool (vLLM inside Ray actors) against bare `vllm.LLM.generate` in one process.

Same model (a ~3M-parameter random-weight tiny Exaone4), same prompts, same sampling (T=0.6, top-p
0.95, sampled-token logprobs), rendered through the same chat template. The two are measured in
alternating rounds so load from other processes on the machine hits both alike; the median round
counts. Also reported: a pool of two actors (on a 2-core machine they compete for the same cores).

    .venv/bin/python benchmarks/rollout_pool.py [--prompts 64 --samples 8 --tokens 64 --rounds 3]

The last line printed is JSON with `ratio` = pool(1 actor) tokens/s / bare vLLM tokens/s.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

MEMORY_SHARE = 0.1  # two or three engines live at once on a 24 GiB machine


def build_model(out_dir: Path) -> Path:
    from dualmode_rl.orchestration.bootstrap.model import TinyModelShape, build_tiny_model
    from dualmode_rl.orchestration.bootstrap.tokenizer import train_tokenizer
    from rollout_fixtures import arithmetic_corpus

    tokenizer = train_tokenizer(arithmetic_corpus(lines=2000), vocab_size=400)
    model = build_tiny_model(tokenizer, TinyModelShape(), seed=0)  # hidden 256, 4 layers: ~3M params
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, vocab {len(tokenizer)}")
    return out_dir


def make_requests(num_prompts: int, samples: int):
    from dualmode_rl.rollout.types import REASONING, GenerationRequest

    return [GenerationRequest(f"p{i}", f"Tom has {i} apples and buys {2 * i + 1} more. How many?", REASONING, n=samples)
            for i in range(num_prompts)]


class BareVllm:
    """What a user would write without dualmode-rl: one vllm.LLM in this process."""

    def __init__(self, model_dir: Path, sampling, max_model_len: int):
        from transformers import AutoTokenizer
        from vllm import LLM

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.mode = sampling.reasoning
        self.llm = LLM(model=str(model_dir), dtype="float32", max_model_len=max_model_len, seed=0,
                       gpu_memory_utilization=MEMORY_SHARE, enforce_eager=True)

    def generate(self, requests) -> int:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from dualmode_rl.rollout.modes import render_prompt_ids

        prompts = [TokensPrompt(prompt_token_ids=render_prompt_ids(self.tokenizer, r)) for r in requests]
        params = SamplingParams(n=requests[0].n, temperature=self.mode.temperature, top_p=self.mode.top_p,
                                max_tokens=self.mode.max_tokens, logprobs=0,
                                stop_token_ids=[self.tokenizer.eos_token_id])
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outputs for c in o.outputs)

    def shutdown(self):
        self.llm.llm_engine.engine_core.shutdown()


class PoolRunner:
    def __init__(self, model_dir: Path, sampling, max_model_len: int, workers: int, cpu_binds=None):
        from dualmode_rl.rollout.pool import PoolPlacement, RolloutPool

        kwargs = dict(model_path=str(model_dir), sampling=sampling, max_model_len=max_model_len, seed=0,
                      gpu_memory_utilization=MEMORY_SHARE)
        self.pool = RolloutPool(workers, kwargs, placement=PoolPlacement(num_cpus_per_worker=1, cpu_binds=cpu_binds))

    def generate(self, requests) -> int:
        return sum(len(s.token_ids) for g in self.pool.generate(requests) for s in g.samples)

    def shutdown(self):
        self.pool.shutdown()


def timed(runner, requests) -> float:
    start = time.perf_counter()
    tokens = runner.generate(requests)
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-two-actors", action="store_true")
    args = parser.parse_args()

    import ray

    from dualmode_rl.rollout.modes import ModeSampling, SamplingConfig

    sampling = SamplingConfig(reasoning=ModeSampling(0.6, 0.95, args.tokens),
                              non_reasoning=ModeSampling(0.4, 0.95, args.tokens))
    requests = make_requests(args.prompts, args.samples)
    max_model_len = 256
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(Path(tmp))
        bare = BareVllm(model_dir, sampling, max_model_len)
        pool = PoolRunner(model_dir, sampling, max_model_len, workers=1)
        bare_rates, pool_rates = [], []
        for runner in (bare, pool):  # warm-up
            runner.generate(requests[:4])
        for _ in range(args.rounds):
            bare_rates.append(timed(bare, requests))
            pool_rates.append(timed(pool, requests))
        pool.shutdown()
        two_rates, bare_rates_2 = [], []
        if not args.skip_two_actors:
            # vLLM's automatic binding reserves one core for its scheduler and binds the worker to the
            # other one, so two auto-bound actors would share one core: give each its own.
            pool2 = PoolRunner(model_dir, sampling, max_model_len, workers=2, cpu_binds=["0", "1"])
            pool2.generate(requests[:4])
            for _ in range(args.rounds):
                bare_rates_2.append(timed(bare, requests))
                two_rates.append(timed(pool2, requests))
            pool2.shutdown()
        bare.shutdown()
    ray.shutdown()

    med = statistics.median
    result = {
        "workload": f"{args.prompts} prompts x {args.samples} samples x {args.tokens} tokens, fp32, CPU",
        "bare_vllm_tok_s": round(med(bare_rates)),
        "pool_1_actor_tok_s": round(med(pool_rates)),
        "ratio": round(med(pool_rates) / med(bare_rates), 3),
    }
    if two_rates:
        result |= {
            "bare_vllm_tok_s_beside_2_actors": round(med(bare_rates_2)),
            "pool_2_actors_tok_s": round(med(two_rates)),
            "ratio_2_actors": round(med(two_rates) / med(bare_rates_2), 3),
        }
    result["rounds"] = {"bare": [round(r) for r in bare_rates], "pool1": [round(r) for r in pool_rates],
                        "bare_2": [round(r) for r in bare_rates_2], "pool2": [round(r) for r in two_rates]}
    print(f"bare vLLM {result['bare_vllm_tok_s']} tok/s | pool, 1 actor {result['pool_1_actor_tok_s']} tok/s"
          f" (ratio {result['ratio']})")
    if two_rates:
        print(f"bare vLLM {result['bare_vllm_tok_s_beside_2_actors']} tok/s | pool, 2 actors (cores 0 and 1)"
              f" {result['pool_2_actors_tok_s']} tok/s (ratio {result['ratio_2_actors']})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
