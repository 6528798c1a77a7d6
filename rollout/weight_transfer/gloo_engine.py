"""dualmode-rl's weight-transfer engine for vLLM's API, over gloo: the CPU twin of vLLM's `nccl` engine.

Registered with vLLM's factories under `GLOO_ENGINE` (worker side: rollout/vllm_weight_sync.py, which
every vLLM worker imports; trainer side: rollout/weight_transfer/sender.py). Both sides follow vLLM's
dense NCCL engine: the trainer is rank 0 of a process group with every vLLM worker of every engine
(ranks 1..N, worker i of engine k at `rank_offset` + i); each update announces the parameters'
names, dtypes and shapes, then rank 0 broadcasts them packed into buckets of `bucket_bytes` (one
bucket in flight while the next is packed or loaded, so memory stays bounded by two buckets). The
worker loads each bucket as it arrives through `WeightLoader`, which the file path shares; `finish`
re-packs vLLM's CPU GEMM weights.

The group is a torch gloo ProcessGroup built without torch.distributed's global state
(`stateless_init_torch_distributed_process_group`, as vLLM's engines build theirs), so it lives next
to a learner's own data-parallel group. Its timeout bounds every rendezvous and broadcast: a rollout
actor busy generating joins the broadcast only when its generation is done.
"""
from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import ClassVar

import torch
from vllm.distributed.weight_transfer.base import ParamMeta, TrainerInitInfo, WeightTransferInitInfo

from ..vllm_weight_sync import weight_loader
from .cpu_common import (BucketUpdateInfo, CpuTrainerEngine, CpuWorkerEngine, bucket_plan, check_exhausted, nbytes,
                         next_bytes, unpack)
from .plan import GLOO_ENGINE


@dataclass
class GlooInitInfo(WeightTransferInitInfo):
    """Worker side: where the group meets and this engine's first rank in it."""

    master_address: str
    master_port: int
    rank_offset: int
    world_size: int
    bucket_bytes: int
    timeout_s: float


@dataclass
class GlooTrainerInitInfo(TrainerInitInfo):
    backend: ClassVar[str] = GLOO_ENGINE

    master_address: str
    master_port: int
    world_size: int
    bucket_bytes: int
    timeout_s: float


def open_group(address: str, port: int, rank: int, world_size: int, timeout_s: float):
    from vllm.distributed.utils import stateless_init_torch_distributed_process_group

    return stateless_init_torch_distributed_process_group(
        address, port, rank, world_size, backend="gloo", timeout=timedelta(seconds=timeout_s))


def close_group(group) -> None:
    from vllm.distributed.utils import stateless_destroy_torch_distributed_process_group

    if group is not None:
        stateless_destroy_torch_distributed_process_group(group)


def send_buckets(group, metas: list[ParamMeta], pairs: Iterator[tuple[str, torch.Tensor]], bucket_bytes: int) -> None:
    """Rank 0: pack and broadcast the iterator's tensors bucket by bucket, checked against `metas`."""
    in_flight = None  # (work, buffer) of the previous bucket: the buffer must live until its broadcast is done
    for bucket in bucket_plan(metas, bucket_bytes):
        buffer = torch.cat([next_bytes(pairs, meta) for meta in bucket])  # packed while the previous bucket is on the wire
        if in_flight is not None:
            in_flight[0].wait()
        in_flight = (group.broadcast(buffer, 0), buffer)
    if in_flight is not None:
        in_flight[0].wait()
    check_exhausted(pairs, len(metas))


def receive_buckets(group, metas: list[ParamMeta], bucket_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Ranks > 0: yield each bucket's (name, tensor) views, the next bucket already being received."""
    buckets = bucket_plan(metas, bucket_bytes)

    def post(bucket):
        buffer = torch.empty(sum(nbytes(m) for m in bucket), dtype=torch.uint8)
        return group.broadcast(buffer, 0), buffer

    pending = post(buckets[0]) if buckets else None
    for i, bucket in enumerate(buckets):
        work, buffer = pending
        work.wait()
        pending = post(buckets[i + 1]) if i + 1 < len(buckets) else None
        yield unpack(buffer, bucket)


class GlooWeightTransferEngine(CpuWorkerEngine):
    """Worker side, created by vLLM in each worker process when `weight_transfer_config.backend` is GLOO_ENGINE."""

    init_info_cls = GlooInitInfo
    update_info_cls = BucketUpdateInfo

    def __init__(self, config, vllm_config, device: torch.device, model: torch.nn.Module) -> None:
        super().__init__(config, vllm_config, device, model)
        self.group = None
        self.bucket_bytes = 0  # set by the trainer at the handshake

    def init_transfer_engine(self, init_info: GlooInitInfo) -> None:
        """Joins (or, after a membership change, re-joins) the trainer's group."""
        self.shutdown()
        p = self.parallel_config
        rank = init_info.rank_offset + p.data_parallel_index * p.world_size + p.rank
        self.bucket_bytes = init_info.bucket_bytes
        self.group = open_group(init_info.master_address, init_info.master_port, rank, init_info.world_size,
                                init_info.timeout_s)

    def receive_weights(self, update_info: BucketUpdateInfo) -> None:
        if self.group is None:
            raise RuntimeError("gloo weight transfer: init_weight_transfer_engine was not called")
        loader = weight_loader(self.vllm_config, self.model)
        for named in receive_buckets(self.group, update_info.metadata(), self.bucket_bytes):
            loader.load(named)

    def shutdown(self) -> None:
        close_group(self.group)
        self.group = None


class GlooTrainerWeightTransferEngine(CpuTrainerEngine):
    """Trainer side: rank 0 joins the group and broadcasts."""

    init_info_cls = GlooTrainerInitInfo
    group = None

    def _join(self, init_info: GlooTrainerInitInfo) -> None:
        workers = GlooInitInfo(init_info.master_address, init_info.master_port, rank_offset=1,
                               world_size=init_info.world_size, bucket_bytes=init_info.bucket_bytes,
                               timeout_s=init_info.timeout_s)
        # The workers block in init_weight_transfer_engine until rank 0 joins: both sides meet together.
        self.group = _alongside(lambda: self.client.init_weight_transfer_engine(asdict(workers)),
                                lambda: open_group(init_info.master_address, init_info.master_port, 0,
                                                   init_info.world_size, init_info.timeout_s))

    def _send(self, meta: list[ParamMeta], pairs) -> None:
        update = BucketUpdateInfo.of(meta)
        self.client.start_weight_update()
        try:
            _alongside(lambda: self.client.update_weights(asdict(update)),
                       lambda: send_buckets(self.group, meta, pairs, self.bucket_bytes))
        except BaseException:
            self.shutdown()  # closes the sockets: workers blocked in a broadcast fail instead of waiting out the timeout
            raise
        self.client.finish_weight_update()

    def shutdown(self) -> None:
        close_group(self.group)
        self.group = None


def _alongside(remote, local):
    """Runs `remote` (a blocking control-plane call) on a thread while `local` runs here; returns
    `local`'s result. On failure it does not wait for the thread, which may be blocked on a peer that
    will never come."""
    executor = ThreadPoolExecutor(max_workers=1)
    try:
        future = executor.submit(remote)
        result = local()
        future.result()
        return result
    finally:
        executor.shutdown(wait=False)
