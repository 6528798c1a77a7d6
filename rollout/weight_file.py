"""Writes a policy's weights to a safetensors file in shared memory, the hand-over format for engines."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import torch

log = logging.getLogger(__name__)
SHM = Path("/dev/shm")
_announced: set[str] = set()


def shared_memory_dir(nbytes: int = 0) -> Path:
    """/dev/shm when it is writable with room for `nbytes` (plus a tenth), else the temp dir; logs the
    choice once per folder."""
    roomy = SHM.is_dir() and os.access(SHM, os.W_OK) and shutil.disk_usage(SHM).free > nbytes * 1.1
    chosen = SHM if roomy else Path(tempfile.gettempdir())
    if str(chosen) not in _announced:
        _announced.add(str(chosen))
        reason = "shared memory" if roomy else f"{SHM} is not writable or has no room for {nbytes / 2**30:.1f} GiB"
        log.info("weight files go to %s (%s)", chosen, reason)
    return chosen


def write_weights_file(weights: dict[str, torch.Tensor], directory: str | Path | None = None) -> Path:
    """Save Hugging Face-named tensors to a fresh file; tensors sharing storage (tied) are copied."""
    from safetensors.torch import save_file

    if not weights:
        raise ValueError("update_weights: the weights dict is empty")
    seen_storage: set[int] = set()
    plain: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"update_weights: weight {name!r} is a {type(tensor).__name__}, not a torch.Tensor")
        t = tensor.detach().to("cpu")
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen_storage:
            t = t.clone()  # safetensors refuses shared storage (tied embeddings)
        seen_storage.add(ptr)
        plain[name] = t.contiguous()
    if directory is None:
        directory = shared_memory_dir(sum(t.numel() * t.element_size() for t in plain.values()))
    path = Path(directory) / f"dualmode-rl-weights-{os.getpid()}-{uuid.uuid4().hex}.safetensors"
    save_file(plain, str(path))
    return path
