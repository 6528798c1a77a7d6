"""Accuracy-filter wall time against the raw generation time of the same samples.

One vLLM engine on a bootstrap checkpoint; N prompts of its train split, G samples each. First the
raw generation: the same chunks of requests passed straight to `engine.generate`, nothing else. Then
`run_filter` (generation + scoring with the built-in "auto" rewards + journal + dataset + report)
into a fresh folder. Target: filter wall <= 1.15 x raw generation.

    .venv/bin/python benchmarks/filter_overhead.py --model runs/bootstrap [--prompts 256 --chunk-size 32]

Without --model a small bootstrap checkpoint is built first (a few minutes). The last line printed
is JSON with `ratio` = filter wall seconds / raw generation seconds.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def small_checkpoint(out: Path) -> Path:
    from orchestration.bootstrap import bootstrap
    from orchestration.config import BootstrapConfig, ModelShape

    cfg = BootstrapConfig(train_size=600, validation_size=20, test_size=20, sft_steps=200, sft_batch_size=16,
                          vocab_size=400, shape=ModelShape(hidden_size=128, intermediate_size=384, sliding_window=16))
    return bootstrap(cfg, out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, help="bootstrap checkpoint folder (holds data/)")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=96)
    args = parser.parse_args()

    from datasets import load_from_disk

    from filtering.accuracy import run_filter
    from filtering.rows import read_rows, request_for, reward_inputs
    from rewards.pool import RewardPool
    from rewards.registry import load_reward
    from rollout.engine import VllmEngine
    from rollout.modes import ModeSampling, SamplingConfig

    work = Path(tempfile.mkdtemp(prefix="filter_overhead_"))
    model = args.model or small_checkpoint(work / "checkpoint")
    dataset = load_from_disk(str(model / "data"))["train"]
    dataset = dataset.select(range(min(args.prompts, len(dataset))))
    mode = ModeSampling(0.6, 0.95, args.max_tokens)
    engine = VllmEngine(str(model), SamplingConfig(reasoning=mode, non_reasoning=ModeSampling(0.4, 0.95, args.max_tokens)),
                        max_model_len=512, seed=0)
    rewards = RewardPool([(load_reward("auto"), 1.0)], num_workers=2, timeout_s=10)
    try:
        engine.generate([request_for(read_rows(dataset, 0, 1)[0], 0, args.samples)])  # warm-up, counted nowhere
        raw, tokens, scoring_alone = 0.0, 0, 0.0
        for start in range(0, len(dataset), args.chunk_size):
            rows = read_rows(dataset, start, start + args.chunk_size)
            requests = [request_for(row, start + i, args.samples) for i, row in enumerate(rows)]
            began = time.monotonic()
            groups = engine.generate(requests)
            raw += time.monotonic() - began
            tokens += sum(len(s.token_ids) for g in groups for s in g.samples)
            inputs = [x for row, g in zip(rows, groups) for x in reward_inputs(row, g.samples)]
            began = time.monotonic()
            rewards.score(inputs)  # the same samples scored with nothing else running, for reference
            scoring_alone += time.monotonic() - began
        began = time.monotonic()
        report = run_filter(engine, rewards, dataset, work / "filtered", samples=args.samples,
                            chunk_size=args.chunk_size)
        wall = time.monotonic() - began
    finally:
        rewards.close()
        engine.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(f"prompts {len(dataset)} x {args.samples} samples, chunk {args.chunk_size}, {tokens} tokens in the raw pass")
    print(f"scoring the raw samples alone (no overlap, no dedup): {scoring_alone:.2f} s")
    print(f"raw generation: {raw:.2f} s; filter wall: {wall:.2f} s (inside: generation {report.generation_seconds:.2f} s,"
          f" scoring {report.scoring_seconds:.2f} s, setup {report.setup_seconds:.2f} s,"
          f" finish {report.finish_seconds:.2f} s)")
    print(f"kept {report.kept}/{report.input}, sample accuracy {report.sample_accuracy:.3f}, histogram {report.histogram}")
    print(json.dumps({"prompts": len(dataset), "samples": args.samples, "chunk_size": args.chunk_size,
                      "raw_generation_seconds": round(raw, 3),
                      "raw_scoring_seconds": round(scoring_alone, 3), "filter_wall_seconds": round(wall, 3),
                      "filter_generation_seconds": report.generation_seconds,
                      "scoring_seconds": report.scoring_seconds, "ratio": round(wall / raw, 3)}))


if __name__ == "__main__":
    main()
