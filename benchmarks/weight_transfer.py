"""Weight-update time into running vLLM rollout actors: vLLM's weight-transfer API with one of dualmode-rl's
CPU engines (`--engine shm`, what `auto` picks on one node, or `gloo`, across nodes) against the
safetensors-file path, side by side in one run, on the same engine(s).

Both paths deliver a learner's fp32 state dict (the tied LM head left out, as the learner exports it)
to a `RolloutPool` of Ray actors running vLLM on CPU, through the driver-side weight syncs the RL loop
uses (rollout/weight_transfer/sync.py):
- engine, `rollout.weight_transfer: shm`: trainer rank 0 (here the benchmark's process, in training
  learner rank 0's actor) packs the tensors bucket by bucket into a shared-memory segment that every
  vLLM worker keeps mapped and loads each bucket from; `gloo`: rank 0 streams the buckets over a gloo
  group while every vLLM worker receives and loads them. Nothing enters the Ray object store.
- file (`rollout.weight_transfer: file`): trainer rank 0 writes the weights to one safetensors file in
  /dev/shm, each actor's workers load the file.
Both end with the same CPU re-packing of vLLM's GEMM weights. Every round sends freshly perturbed
weights; the first round of each path (group formation, restoring vLLM's full CPU weights) is a
warm-up and not counted; the two paths alternate so load from other processes hits both alike;
medians are compared. After the last round vLLM's prompt log-probs are checked against transformers
holding the same weights.

    .venv/bin/python benchmarks/weight_transfer.py [--engine shm|gloo] [--shape 30m] [--rounds 5] [--bucket-mb 256] [--workers 1]

The last line printed is JSON: `ratio` = file time / engine time (> 1: the engine is faster).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.e2e_vs_trl import MEMORY_SHARE, SHAPES, build_model  # noqa: E402

MAX_MODEL_LEN = 256


class Trainer:
    """A learner's weights: the checkpoint, moved a little every round."""

    def __init__(self, model_dir: Path):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.round = 0

    @torch.no_grad()
    def step(self) -> None:
        self.round += 1
        gen = torch.Generator().manual_seed(self.round)
        for p in self.model.parameters():
            p.add_(1e-3 * torch.randn(p.shape, generator=gen))

    def weights(self) -> dict[str, torch.Tensor]:
        tied = self.model.config.tie_word_embeddings
        return {k: v for k, v in self.model.state_dict().items() if not (tied and k == "lm_head.weight")}

    @torch.no_grad()
    def prompt_logprobs(self, ids: list[int]) -> list[float]:
        logits = self.model(torch.tensor([ids])).logits[0, :-1]
        return logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1).tolist()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", default="shm", choices=("shm", "gloo"), help="rollout.weight_transfer")
    p.add_argument("--shape", default="30m", choices=sorted(SHAPES))
    p.add_argument("--rounds", type=int, default=5, help="measured updates per path, after one warm-up each")
    p.add_argument("--bucket-mb", type=float, default=256, help="rollout.weight_transfer_bucket_mb")
    p.add_argument("--workers", type=int, default=1, help="rollout actors (vLLM engines)")
    return p.parse_args()


def main() -> None:
    import ray

    from dualmode_rl.rollout.modes import SamplingConfig
    from dualmode_rl.rollout.pool import PoolPlacement, RolloutPool
    from dualmode_rl.rollout.weight_transfer.sync import BroadcastSync, FileSync, LocalTrainer

    args = parse_args()
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="weight_transfer_"))
    params = build_model(work / "model", args.shape)
    trainer = Trainer(work / "model")
    size = sum(t.numel() * t.element_size() for t in trainer.weights().values())
    print(f"model: {params / 1e6:.1f}M parameters, {size / 2**20:.0f} MiB per update; {args.workers} engine(s)",
          file=sys.stderr)
    ray.init(num_cpus=max(os.cpu_count(), args.workers), include_dashboard=False, log_to_driver=False)
    pool = RolloutPool(args.workers, dict(model_path=str(work / "model"), sampling=SamplingConfig(seed=0),
                                          max_model_len=MAX_MODEL_LEN, seed=0, gpu_memory_utilization=MEMORY_SHARE,
                                          weight_transfer=args.engine),
                       placement=PoolPlacement(num_cpus_per_worker=1))
    paths = {"file": FileSync(pool, LocalTrainer(trainer.weights).sync_weights_to_file),
             "engine": BroadcastSync(pool, LocalTrainer(trainer.weights), args.engine, int(args.bucket_mb * 2**20), 600)}
    times: dict[str, list[float]] = {name: [] for name in paths}
    version = 0
    try:
        for _ in range(args.rounds + 1):  # the first round is the warm-up
            for name, sync in paths.items():
                trainer.step()
                version += 1
                start = time.perf_counter()
                sync.update(version)
                times[name].append(time.perf_counter() - start)
        ids = list(range(3, 3 + 64))
        gap = max(abs(a - b) for a, b in zip(pool.prompt_logprobs(ids), trainer.prompt_logprobs(ids)))
    finally:
        paths["engine"].close()
        pool.shutdown()
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    file_s, engine_s = (statistics.median(times[name][1:]) for name in ("file", "engine"))
    result = {
        "ratio": round(file_s / engine_s, 3), "file_s": round(file_s, 3), "engine_s": round(engine_s, 3),
        "engine_mib_per_s": round(size / 2**20 / engine_s, 1),
        "warmup_s": {name: round(t[0], 3) for name, t in times.items()},
        "rounds_s": {name: [round(x, 3) for x in t[1:]] for name, t in times.items()},
        "logprob_gap_after_last_update": gap,
        "settings": {"engine": args.engine, "shape": args.shape, "params": params, "bytes_per_update": size, "engines": args.workers,
                     "bucket_mb": args.bucket_mb, "rounds": args.rounds, "dtype": "float32", "device": "cpu",
                     "cpu_count": os.cpu_count()},
    }
    print(f"file {file_s:.3f} s | {args.engine} engine {engine_s:.3f} s | ratio {result['ratio']}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
