"""dualmode-rl's shared-memory engine for vLLM's weight-transfer API: the CPU twin of vLLM's `ipc`
engine, for rollout engines on the trainer's node (`rollout.weight_transfer: shm`; `auto` picks it on
a one-node CPU cluster).

Trainer rank 0 owns one segment, a file in /dev/shm (rollout/weight_file.py's `shared_memory_dir`)
that it and every vLLM worker map once and keep mapped. Per update it packs the weights into the
segment bucket by bucket and, for each bucket, calls vLLM's `update_weights` with the bucket's
names, dtypes and shapes; every worker loads the bucket straight from its mapping through the
`WeightLoader` the other paths share, and returns before the next bucket is packed. Against the
file path this skips safetensors' serialisation, its second copy on load and the page faults of
a fresh file each update; against gloo, the socket. Memory: one bucket (at most the whole update).
"""
from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
from vllm.distributed.weight_transfer.base import TrainerInitInfo, WeightTransferInitInfo

from ..vllm_weight_sync import weight_loader
from .cpu_common import (BucketUpdateInfo, CpuTrainerEngine, CpuWorkerEngine, bucket_plan, check_exhausted, nbytes,
                         next_bytes, unpack)
from .plan import SHM_ENGINE

SEGMENT_PREFIX = "dualmode_rl_weights_"  # then the trainer's pid


@dataclass
class ShmInitInfo(WeightTransferInitInfo):
    pass


@dataclass
class ShmUpdateInfo(BucketUpdateInfo):
    segment: str = ""  # the segment's path
    segment_bytes: int = 0


@dataclass
class ShmTrainerInitInfo(TrainerInitInfo):
    backend: ClassVar[str] = SHM_ENGINE

    bucket_bytes: int


def map_segment(path: str, size: int) -> torch.Tensor:
    """The segment's bytes, shared with every process that maps the same file."""
    return torch.from_file(path, shared=True, size=size, dtype=torch.uint8)


class ShmWeightTransferEngine(CpuWorkerEngine):
    """Worker side, created by vLLM in each worker process when `weight_transfer_config.backend` is SHM_ENGINE."""

    init_info_cls = ShmInitInfo
    update_info_cls = ShmUpdateInfo

    def __init__(self, config, vllm_config, device: torch.device, model: torch.nn.Module) -> None:
        super().__init__(config, vllm_config, device, model)
        self.mapped: tuple[str, torch.Tensor] | None = None

    def init_transfer_engine(self, init_info: ShmInitInfo) -> None:
        self.shutdown()

    def receive_weights(self, update_info: ShmUpdateInfo) -> None:
        bucket = update_info.metadata()
        buffer = self._segment(update_info.segment, update_info.segment_bytes)
        weight_loader(self.vllm_config, self.model).load(unpack(buffer[:sum(nbytes(m) for m in bucket)], bucket))

    def _segment(self, path: str, size: int) -> torch.Tensor:
        if self.mapped is None or self.mapped[0] != path:
            if not os.path.exists(path):  # from_file would create it: an empty segment, not the trainer's
                raise RuntimeError(f"shm weight transfer: segment {path} not found; this rollout engine is not on "
                                   "the trainer's node (use rollout.weight_transfer: gloo across nodes)")
            self.mapped = (path, map_segment(path, size))
        return self.mapped[1]

    def shutdown(self) -> None:
        self.mapped = None


class ShmTrainerWeightTransferEngine(CpuTrainerEngine):
    """Trainer side: rank 0 owns the segment and sends."""

    init_info_cls = ShmTrainerInitInfo
    segment: tuple[Path, torch.Tensor] | None = None

    def _join(self, init_info: ShmTrainerInitInfo) -> None:
        self.client.init_weight_transfer_engine(asdict(ShmInitInfo()))

    def _send(self, meta, pairs) -> None:
        self.client.start_weight_update()
        for bucket in bucket_plan(meta, self.bucket_bytes):
            path, buffer = self._segment(sum(nbytes(m) for m in bucket))
            offset = 0
            for m in bucket:
                buffer[offset:offset + nbytes(m)].copy_(next_bytes(pairs, m))
                offset += nbytes(m)
            self.client.update_weights(asdict(ShmUpdateInfo.of(bucket, segment=str(path), segment_bytes=buffer.numel())))
        check_exhausted(pairs, len(meta))
        self.client.finish_weight_update()

    def _segment(self, size: int) -> tuple[Path, torch.Tensor]:
        """The segment, replaced by a larger one when a bucket outgrows it."""
        if self.segment is None or self.segment[1].numel() < size:
            from ..weight_file import shared_memory_dir

            self.shutdown()
            directory = shared_memory_dir(size)
            remove_orphans(directory)
            path = directory / f"{SEGMENT_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:8]}"
            self.segment = (path, map_segment(str(path), size))
        return self.segment

    def shutdown(self) -> None:
        """Unlinks the segment: mappings stay valid, and the memory is freed when the last one goes."""
        if self.segment is not None:
            self.segment[0].unlink(missing_ok=True)
            self.segment = None


def remove_orphans(directory: Path) -> None:
    """Deletes the segments of trainers that are gone (a SIGKILL skips `shutdown`)."""
    for path in directory.glob(f"{SEGMENT_PREFIX}*"):
        pid = path.name.removeprefix(SEGMENT_PREFIX).split("_")[0]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
