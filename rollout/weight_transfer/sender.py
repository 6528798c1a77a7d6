"""The trainer side of a weight update, buildable in any process from plain data (never imports ray).

A `WeightSender` wraps the trainer engine vLLM's `WeightTransferTrainerFactory` builds for the plan's
backend: vLLM's own `nccl` (learner and vLLM on separate GPUs) or `ipc` (colocated), or dualmode-rl's
gloo engine on CPU. Every trainer rank builds one (`rank`) and calls `send` in lockstep with the same
kind of iterator: iterating may gather (FSDP2 `full_tensor()`, one decoder layer at a time), and
rank 0 streams what it yields. The client (rollout/weight_transfer/client.py: Ray actor handles) is
how rank 0 drives the rollout workers' side of vLLM's API: init_weight_transfer_engine,
start_weight_update, update_weights (run alongside the broadcast), finish_weight_update.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from vllm.distributed.weight_transfer import ParamMeta, WeightSource, WeightTransferTrainerFactory

from .plan import CPU_ENGINES, TransferPlan, WeightMeta


class WeightSender:
    def __init__(self, plan: TransferPlan, rank: int, client):
        register_cpu_trainers()
        self.rank, self.client = rank, client
        self.source = RoundSource()
        self.engine = WeightTransferTrainerFactory.trainer_init(trainer_init_info(plan, rank), client=client,
                                                                source=self.source)

    def send(self, weights: Iterable[tuple[str, torch.Tensor]], metadata: list[WeightMeta], version: int) -> None:
        """One update: `weights` yields (name, full tensor) in `metadata`'s order; the rollout engines
        label what they sample afterwards with `version`."""
        self.source.next_round(metadata, weights)
        if self.rank == 0:
            self.client.version = int(version)
        self.engine.send_weights()

    def close(self) -> None:
        self.engine.shutdown()


def register_cpu_trainers() -> None:
    for backend, name in CPU_ENGINES.items():
        if name not in WeightTransferTrainerFactory._registry:
            WeightTransferTrainerFactory.register_engine(
                name, f"dualmode_rl.rollout.weight_transfer.{backend}_engine", f"{backend.title()}TrainerWeightTransferEngine")


def trainer_init_info(plan: TransferPlan, rank: int):
    if plan.backend == "gloo":
        from .gloo_engine import GlooTrainerInitInfo

        return GlooTrainerInitInfo(plan.master_address, plan.master_port, plan.world_size, rank=rank,
                                   bucket_bytes=plan.bucket_bytes, timeout_s=plan.timeout_s)
    if plan.backend == "shm":
        from .shm_engine import ShmTrainerInitInfo

        return ShmTrainerInitInfo(rank=rank, bucket_bytes=plan.bucket_bytes)
    if plan.backend == "nccl":
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        return NCCLTrainerInitInfo(plan.master_address, plan.master_port, plan.world_size, rank=rank,
                                   packed=True, packed_buffer_size_bytes=plan.bucket_bytes)
    from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

    return IPCTrainerInitInfo(rank=rank, packed=True, packed_buffer_size_bytes=plan.bucket_bytes)


class RoundSource(WeightSource):
    """vLLM's `WeightSource`, one round at a time: trainer engines read `metadata()`, then iterate once."""

    def __init__(self):
        self._meta: list[ParamMeta] = []
        self._weights: Iterator | None = None

    def next_round(self, metadata: list[WeightMeta], weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        self._meta = [ParamMeta(name, dtype, tuple(shape)) for name, dtype, shape in metadata]
        self._weights = iter(weights)

    def metadata(self) -> list[ParamMeta]:
        return self._meta

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        weights, self._weights = self._weights, None
        if weights is None:
            raise RuntimeError("WeightSender: this round's weights were already sent")
        return weights
