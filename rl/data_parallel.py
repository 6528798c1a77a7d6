"""Data parallelism over torch.distributed: summed gradients and metrics across learners.

Losses are already normalised by batch-wide totals, so the data-parallel gradient is the SUM of
the ranks' gradients (not the mean). The caller initialises the process group (gloo on CPU,
nccl on GPU); without one, everything here is a no-op.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(world_size, rank); (1, 0) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def sum_gradients(parameters: list[torch.nn.Parameter]) -> None:
    if world()[0] == 1:
        return
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in parameters]
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for grad, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        grad.copy_(synced)


def sum_values(values: dict[str, float], device: torch.device) -> dict[str, float]:
    return _reduce(values, device, "SUM")


def max_values(values: dict[str, float], device: torch.device) -> dict[str, float]:
    return _reduce(values, device, "MAX")


def _reduce(values: dict[str, float], device: torch.device, op: str) -> dict[str, float]:
    if world()[0] == 1 or not values:
        return values
    keys = sorted(values)
    packed = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(packed, op=getattr(dist.ReduceOp, op))
    return dict(zip(keys, packed.tolist()))
