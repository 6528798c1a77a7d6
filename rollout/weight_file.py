"""Writes a policy's weights to a safetensors file in shared memory, the hand-over format for engines."""
from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import torch


def shared_memory_dir() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def write_weights_file(weights: dict[str, torch.Tensor], directory: Path | None = None) -> Path:
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
    path = (directory or shared_memory_dir()) / f"dualmode-rl-weights-{os.getpid()}-{uuid.uuid4().hex}.safetensors"
    save_file(plain, str(path))
    return path
