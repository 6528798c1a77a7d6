"""What dualmode-rl's two CPU engines for vLLM's weight-transfer API share (gloo_engine: any node, over
a gloo group; shm_engine: engines on the trainer's node, through shared memory): the update's metadata,
its buckets, the trainer's check of what it is given, the trainer side's frame, and the worker side's
update cycle, which loads through the `WeightLoader` the file path also uses (rollout/vllm_weight_sync.py)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from vllm.distributed.weight_transfer.base import (
    ParamMeta,
    TrainerWeightTransferEngine,
    VLLMWeightSyncClient,
    WeightSource,
    WeightTransferEngine,
    WeightTransferUpdateInfo,
)
from vllm.distributed.weight_transfer.packed_tensor import unpack_tensor

from ..vllm_weight_sync import weight_loader


@dataclass
class BucketUpdateInfo(WeightTransferUpdateInfo):
    """The tensors of an update (gloo) or of one bucket (shm), in the order they are packed."""

    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]

    def __post_init__(self):
        if not len(self.names) == len(self.dtype_names) == len(self.shapes):
            raise ValueError(f"{type(self).__name__}: {len(self.names)} names, {len(self.dtype_names)} dtypes, "
                             f"{len(self.shapes)} shapes")

    @classmethod
    def of(cls, metas: list[ParamMeta], **fields):
        return cls([m.name for m in metas], [str(m.dtype).removeprefix("torch.") for m in metas],
                   [list(m.shape) for m in metas], **fields)

    def metadata(self) -> list[ParamMeta]:
        return [ParamMeta(n, getattr(torch, d), tuple(s)) for n, d, s in zip(self.names, self.dtype_names, self.shapes)]


def nbytes(meta: ParamMeta) -> int:
    return math.prod(meta.shape) * meta.dtype.itemsize


def bucket_plan(metas: list[ParamMeta], bucket_bytes: int) -> list[list[ParamMeta]]:
    """Consecutive parameters, each bucket closed once it reaches `bucket_bytes` (a larger tensor goes
    alone). Both sides derive it from the same metadata, so their buckets agree."""
    buckets, current, size = [], [], 0
    for meta in metas:
        current.append(meta)
        size += nbytes(meta)
        if size >= bucket_bytes:
            buckets.append(current)
            current, size = [], 0
    if current:
        buckets.append(current)
    return buckets


def unpack(buffer: torch.Tensor, bucket: list[ParamMeta]) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) views of a packed bucket's bytes."""
    return unpack_tensor(buffer, [m.name for m in bucket], [list(m.shape) for m in bucket],
                         [m.dtype for m in bucket], [nbytes(m) for m in bucket])


def next_bytes(pairs, meta: ParamMeta) -> torch.Tensor:
    """The iterator's next tensor as flat bytes on the CPU, checked against its announced metadata."""
    name, tensor = next(pairs, (None, None))
    if name != meta.name or tensor.dtype != meta.dtype or tuple(tensor.shape) != meta.shape:
        got = "nothing" if name is None else f"{name!r} {tensor.dtype} {tuple(tensor.shape)}"
        raise ValueError(f"weight transfer: announced {meta.name!r} {meta.dtype} {meta.shape}, got {got}; "
                         "the weights must come in the order and shapes of their metadata")
    return tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8)


def check_exhausted(pairs, announced: int) -> None:
    if next(pairs, None) is not None:
        raise ValueError(f"weight transfer: the weights hold more tensors than the {announced} announced")


class CpuWorkerEngine(WeightTransferEngine):
    """The worker side's cycle: `start` restores vLLM's full CPU weights once, each update loads what it
    receives (`receive_weights`, the subclass's), `finish` re-packs vLLM's CPU GEMM weights."""

    def start_weight_update(self) -> None:
        weight_loader(self.vllm_config, self.model).begin()

    def update_weights(self, update_info: dict) -> None:
        # The base class synchronises the accelerator afterwards, which raises where there is none.
        self.receive_weights(self.parse_update_info(update_info))
        if torch.accelerator.is_available():
            torch.accelerator.synchronize()

    def finish_weight_update(self) -> None:
        weight_loader(self.vllm_config, self.model).finish()


class CpuTrainerEngine(TrainerWeightTransferEngine):
    """The trainer side's frame. Every trainer rank builds one and calls `send_weights` in lockstep
    (iterating the source may be a collective, e.g. FSDP's all-gather); only rank 0, the sender, meets
    the workers (`_join`, the subclass's) and sends (`_send`)."""

    def __init__(self, *, client: VLLMWeightSyncClient, source: WeightSource, is_sender: bool,
                 bucket_bytes: int) -> None:
        super().__init__(client=client, source=source, is_sender=is_sender)
        self.bucket_bytes = bucket_bytes

    @classmethod
    def trainer_init(cls, init_info, *, client: VLLMWeightSyncClient, source: WeightSource | None = None):
        if source is None:
            raise ValueError(f"{cls.__name__} needs a WeightSource")
        engine = cls(client=client, source=source, is_sender=init_info.is_sender, bucket_bytes=init_info.bucket_bytes)
        if engine.is_sender:
            engine._join(init_info)
        return engine

    def send_weights(self) -> None:
        meta = self.source.metadata()
        pairs = iter(self.source)
        if not self.is_sender:
            for _ in pairs:  # keep in step with rank 0's gathers
                pass
            return
        self._send(meta, pairs)

    def _join(self, init_info) -> None:
        raise NotImplementedError

    def _send(self, meta: list[ParamMeta], pairs) -> None:
        raise NotImplementedError
