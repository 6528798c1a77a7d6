"""What a trainer rank needs to join a weight-transfer group: plain, picklable data (no vllm, no ray)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

BACKENDS = ("gloo", "shm", "nccl", "ipc")  # gloo, shm: dualmode-rl's CPU engines; nccl, ipc: vLLM's own
GLOO_ENGINE = "dualmode_rl_gloo"  # the names vLLM's factories know rollout/weight_transfer/gloo_engine.py
SHM_ENGINE = "dualmode_rl_shm"  # and shm_engine.py by
CPU_ENGINES = {"gloo": GLOO_ENGINE, "shm": SHM_ENGINE}

WeightMeta = tuple[str, torch.dtype, tuple[int, ...]]  # Hugging Face name, dtype, full shape


@dataclass(frozen=True)
class TransferPlan:
    backend: str  # one of BACKENDS
    master_address: str  # where trainer rank 0 listens (gloo, nccl)
    master_port: int
    world_size: int  # 1 (trainer rank 0) + every vLLM worker of every rollout engine
    bucket_bytes: int
    timeout_s: float

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"weight transfer backend must be one of {BACKENDS}, got {self.backend!r}")


def weight_metadata(weights: dict[str, torch.Tensor]) -> list[WeightMeta]:
    return [(name, t.dtype, tuple(t.shape)) for name, t in weights.items()]
