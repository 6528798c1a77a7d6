"""The GPU check of the rollout side: what CPU CI cannot run. Needs CUDA GPUs, vLLM with CUDA, Ray.

On a random-weight model of the EXAONE-4.0-1.2B shape (benchmarks/learner_step.py builds it), in one run:

1. separate GPUs (>= 2 GPUs): a `RolloutPool` engine on one GPU, the trainer (this process, fp32
   weights as a learner's master copy) on another. Weight-update time through vLLM's built-in `nccl`
   engine (BroadcastSync, the path `rollout.weight_transfer: auto` picks) against the file path
   (FileSync), alternating on the same engine; after each path's last update vLLM's log-probs are
   compared with the trainer's.
2. colocated (1 GPU is enough): the engine with `enable_sleep_mode` (`rollout.placement: colocated`)
   on the trainer's GPU. Update time through vLLM's `ipc` engine against the file path; one sleep /
   wake-up cycle (level 1): GPU memory freed while asleep, time to sleep and wake, generation after.
3. tensor parallelism (>= 2 GPUs): an engine with tensor_parallel_size 2, placed by
   rollout/placement.py (one placement group of two 1-GPU bundles, VLLM_RAY_BUNDLE_INDICES), generates.
4. the loop's colocated layout (1 GPU; with 2, two learner ranks and one engine of TP 2): a
   LearnerGroup and a RolloutPool built from a `rollout.placement: colocated` config as `dualmode-rl
   train` builds them. The engine lives in the learner group's placement group, on the GPUs of the
   learner ranks (checked from the GPU ids Ray gave each); weights go from every learner rank through
   vLLM's `ipc` engine (each rank shares its own GPU's copy); sleep / wake-up and a generation follow.

    .venv/bin/python benchmarks/gpu_rollout.py [--rounds 3] [--bucket-mb 1024]

The last line printed is JSON; a part that the machine cannot run is listed under "skipped". Without
CUDA it stops at once with a message saying so.
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

MAX_MODEL_LEN = 2048
PROMPT = list(range(3, 3 + 256))  # token ids for the log-prob check (the tokenizer is word-level t3, t4, ...)


class Trainer:
    """A learner's weights on one GPU (fp32, the master copy), moved a little every round."""

    def __init__(self, model_dir: Path, device: torch.device):
        from transformers import AutoModelForCausalLM

        self.device = device
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device)
        self.round = 0

    @torch.no_grad()
    def step(self) -> None:
        self.round += 1
        gen = torch.Generator(device=self.device).manual_seed(self.round)
        for p in self.model.parameters():
            p.add_(1e-3 * p.abs().mean() * torch.randn(p.shape, generator=gen, device=self.device))

    def weights(self) -> dict[str, torch.Tensor]:
        tied = self.model.config.tie_word_embeddings
        return {k: v for k, v in self.model.state_dict().items() if not (tied and k == "lm_head.weight")}

    @torch.no_grad()
    def prompt_logprobs(self, ids: list[int]) -> list[float]:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = self.model(torch.tensor([ids], device=self.device)).logits[0, :-1].float()
        return logits.log_softmax(-1).gather(1, torch.tensor(ids[1:], device=self.device)[:, None]).squeeze(1).tolist()


def start_pool(model_dir: Path, **engine_settings):
    from dualmode_rl.rollout.modes import SamplingConfig
    from dualmode_rl.rollout.pool import PoolPlacement, RolloutPool

    return RolloutPool(1, dict(model_path=str(model_dir), sampling=SamplingConfig(seed=0), max_model_len=MAX_MODEL_LEN,
                               seed=0, **engine_settings), placement=PoolPlacement(num_cpus_per_worker=1))


def compare_updates(pool, trainer: Trainer, syncs: dict, rounds: int) -> dict:
    """Alternating timed updates per path (the first of each a warm-up), then the log-prob gap to the trainer."""
    times = {name: [] for name in syncs}
    gaps = {}
    version = 0
    for _ in range(rounds + 1):
        for name, sync in syncs.items():
            before = pool.prompt_logprobs(PROMPT)
            trainer.step()
            version += 1
            torch.cuda.synchronize()
            start = time.perf_counter()
            sync.update(version)
            times[name].append(time.perf_counter() - start)
            after, expected = pool.prompt_logprobs(PROMPT), trainer.prompt_logprobs(PROMPT)
            # bf16 engine against an fp32 (bf16-autocast) trainer: the gap must be far below what an update moves
            gaps[name] = {"to_trainer": max(abs(a - b) for a, b in zip(after, expected)),
                          "update_moved": max(abs(a - b) for a, b in zip(after, before))}
    medians = {name: statistics.median(t[1:]) for name, t in times.items()}
    return {"seconds": {n: round(s, 3) for n, s in medians.items()},
            "rounds_s": {n: [round(x, 3) for x in t[1:]] for n, t in times.items()},
            "warmup_s": {n: round(t[0], 3) for n, t in times.items()}, "logprob_gaps": gaps}


def separate_gpus(model_dir: Path, args) -> dict:
    from dualmode_rl.rollout.weight_transfer.sync import BroadcastSync, FileSync, LocalTrainer

    pool = start_pool(model_dir, weight_transfer="nccl", dtype="bfloat16")
    try:
        engine_gpu = pool.ping()[0]["gpus"][0]
        trainer_gpu = next(g for g in range(torch.cuda.device_count()) if g != engine_gpu)
        torch.cuda.set_device(trainer_gpu)  # vLLM's trainer engines use the current device
        trainer = Trainer(model_dir, torch.device("cuda", trainer_gpu))
        nccl = BroadcastSync(pool, LocalTrainer(trainer.weights), "nccl", int(args.bucket_mb * 2**20), 600)
        try:
            file = FileSync(pool, LocalTrainer(trainer.weights).sync_weights_to_file)
            result = compare_updates(pool, trainer, {"file": file, "nccl": nccl}, args.rounds)
        finally:
            nccl.close()
    finally:
        pool.shutdown()
    result["ratio_file_over_nccl"] = round(result["seconds"]["file"] / result["seconds"]["nccl"], 2)
    return result


def colocated(model_dir: Path, args) -> dict:
    from dualmode_rl.rollout.types import GenerationRequest
    from dualmode_rl.rollout.weight_transfer.sync import BroadcastSync, FileSync, LocalTrainer

    pool = start_pool(model_dir, weight_transfer="ipc", dtype="bfloat16", enable_sleep_mode=True)
    try:
        gpu = pool.ping()[0]["gpus"][0]
        torch.cuda.set_device(gpu)  # the trainer on the engine's GPU: CUDA IPC hands over device memory
        trainer = Trainer(model_dir, torch.device("cuda", gpu))
        ipc = BroadcastSync(pool, LocalTrainer(trainer.weights), "ipc", int(args.bucket_mb * 2**20), 600,
                            colocated=True)
        try:
            file = FileSync(pool, LocalTrainer(trainer.weights).sync_weights_to_file)
            result = compare_updates(pool, trainer, {"file": file, "ipc": ipc}, args.rounds)
            awake_free = torch.cuda.mem_get_info(gpu)[0]
            start = time.perf_counter()
            with ipc.training():  # what the loop does around the learner step
                asleep_free = torch.cuda.mem_get_info(gpu)[0]
                slept = time.perf_counter() - start
                start = time.perf_counter()
            woke = time.perf_counter() - start
            (group,) = pool.generate([GenerationRequest("after-wake", "t5 t6 t7", "non_reasoning", n=2)])
            gap_after_wake = max(abs(a - b) for a, b in zip(pool.prompt_logprobs(PROMPT), trainer.prompt_logprobs(PROMPT)))
        finally:
            ipc.close()
    finally:
        pool.shutdown()
    result["ratio_file_over_ipc"] = round(result["seconds"]["file"] / result["seconds"]["ipc"], 2)
    result["sleep_wake"] = {"freed_gib": round((asleep_free - awake_free) / 2**30, 2), "sleep_s": round(slept, 3),
                            "wake_s": round(woke, 3), "samples_after_wake": len(group.samples),
                            "logprob_gap_after_wake": gap_after_wake}
    return result


def tensor_parallel(model_dir: Path) -> dict:
    from dualmode_rl.rollout.modes import SamplingConfig
    from dualmode_rl.rollout.pool import PoolPlacement, RolloutPool
    from dualmode_rl.rollout.types import GenerationRequest

    pool = RolloutPool(1, dict(model_path=str(model_dir), sampling=SamplingConfig(seed=0), max_model_len=MAX_MODEL_LEN,
                               seed=0, dtype="bfloat16", tensor_parallel_size=2),
                       placement=PoolPlacement(num_cpus_per_worker=1))  # GPUs: the TP size, by default
    try:
        start = time.perf_counter()
        groups = pool.generate([GenerationRequest(f"tp{i}", "t5 t6 t7 t8", "reasoning", n=4) for i in range(8)])
        seconds = time.perf_counter() - start
        tokens = sum(len(s.token_ids) for g in groups for s in g.samples)
    finally:
        pool.shutdown()
    return {"bundles": pool.engine_placements[0].bundles, "env": pool.engine_placements[0].env,
            "groups": len(groups), "completion_tokens": tokens, "seconds": round(seconds, 2)}


def colocated_layout(model_dir: Path, gpus: int) -> dict:
    import ray

    from dualmode_rl.orchestration.components import (build_weight_sync, learner_config, learner_placement,
                                                      pool_placement, rollout_engine_kwargs)
    from dualmode_rl.orchestration.config import load_config
    from dualmode_rl.orchestration.learner_group import LearnerGroup
    from dualmode_rl.rollout.pool import RolloutPool
    from dualmode_rl.rollout.types import GenerationRequest

    tp = 2 if gpus >= 2 else 1
    cfg = load_config(None, [f"model={model_dir}", "rollout.placement=colocated", f"rollout.tensor_parallel_size={tp}",
                             f"learner.num_workers={tp}", "learner.gpus_per_worker=1", "learner.strategy=fsdp2",
                             "rollout.dtype=bfloat16", f"rollout.max_model_len={MAX_MODEL_LEN}", "algorithm.beta=0"])
    learner = LearnerGroup(learner_config(cfg), learner_placement(cfg))
    pool = RolloutPool(1, rollout_engine_kwargs(cfg, model_dir, 0, "ipc"), placement=pool_placement(cfg, learner))
    sync = build_weight_sync(cfg, pool, learner, "ipc")
    try:
        learner_gpus = sorted(g for info in ray.get([w.where.remote() for w in learner.workers]) for g in info["gpus"])
        engine = pool.ping()[0]
        start = time.perf_counter()
        sync.update(version=1)
        update_s = time.perf_counter() - start
        start = time.perf_counter()
        with sync.training():
            slept = pool.ping()[0]["sleeping"]
        sleep_wake_s = time.perf_counter() - start
        (group,) = pool.generate([GenerationRequest("colocated", "t5 t6 t7", "reasoning", n=4)])
    finally:
        sync.close()
        pool.shutdown()
        learner.shutdown()
    return {"learner_ranks": tp, "tensor_parallel_size": tp, "learner_gpus": learner_gpus,
            "engine_actor_gpus": engine["gpus"],  # tp 1: the learner rank's GPU; tp 2: none (its TP workers hold them)
            "engine_in_learner_group": engine["placement_group"] == learner.placement_group.id.hex(),
            "ipc_update_s": round(update_s, 3), "asleep_during_step": slept, "sleep_wake_s": round(sleep_wake_s, 3),
            "policy_version_after": sorted({s.policy_version for s in group.samples})}


def build_model(directory: Path) -> int:
    """The 1.2B shape with random weights and a word-level tokenizer, given the project's chat template
    (the rollout engines render prompts through it)."""
    from transformers import AutoTokenizer

    from benchmarks.learner_step import save_model
    from dualmode_rl.orchestration.bootstrap.chat_template import CHAT_TEMPLATE

    params = save_model(directory, "1.2b", "cpu")
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    return params


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="measured updates per path, after one warm-up each")
    p.add_argument("--bucket-mb", type=float, default=1024, help="rollout.weight_transfer_bucket_mb")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu_rollout.py needs CUDA GPUs and found none: it checks vLLM's nccl and ipc weight "
                 "transfer, sleep mode and tensor parallelism on GPUs. On CPU, benchmarks/weight_transfer.py times "
                 "dualmode-rl's gloo engine against the file path.")
    import ray

    gpus = torch.cuda.device_count()
    work = Path(tempfile.mkdtemp(prefix="gpu_rollout_"))
    params = build_model(work / "model")
    ray.init(include_dashboard=False, log_to_driver=False)
    results, skipped = {}, {}
    try:
        if gpus >= 2:
            results["separate_nccl"] = separate_gpus(work / "model", args)
            results["tensor_parallel_2"] = tensor_parallel(work / "model")
        else:
            skipped["separate_nccl"] = skipped["tensor_parallel_2"] = f"needs 2 GPUs, found {gpus}"
        results["colocated_ipc"] = colocated(work / "model", args)
        results["colocated_layout"] = colocated_layout(work / "model", gpus)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({**results, "skipped": skipped,
                      "settings": {"shape": "EXAONE-4.0-1.2B", "params": params, "trainer_dtype": "float32",
                                   "engine_dtype": "bfloat16", "gpus": gpus, "gpu": torch.cuda.get_device_name(0),
                                   "rounds": args.rounds, "bucket_mb": args.bucket_mb}}))


if __name__ == "__main__":
    main()
