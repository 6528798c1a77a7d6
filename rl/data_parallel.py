"""Data parallelism over torch.distributed: summed gradients and metrics across learners.

Losses are already normalised by batch-wide totals, so the data-parallel gradient is the SUM of
the ranks' gradients (not the mean). The caller initialises the process group (gloo on CPU,
nccl on GPU); without one, everything here is a no-op.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world() -> tuple[int, int]:
    """(world_size, rank); (1, 0) without an initialised process group."""
    if initialized():
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


def max_value(value: int, device: torch.device) -> int:
    if world()[0] == 1:
        return value
    packed = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return int(packed.item())


def sum_values(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sums each named value over the ranks; a name some rank lacks (no sequence of a mode there) counts 0."""
    return _reduce(values, device, "SUM")


def max_values(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """The largest of each named value over the ranks (values >= 0; a name some rank lacks counts 0)."""
    return _reduce(values, device, "MAX")


def _reduce(values: dict[str, float], device: torch.device, op: str) -> dict[str, float]:
    if world()[0] == 1:
        return values
    names: list[list[str]] = [[] for _ in range(world()[0])]
    dist.all_gather_object(names, sorted(values))
    keys = sorted(set().union(*names))
    packed = torch.tensor([values.get(k, 0.0) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(packed, op=getattr(dist.ReduceOp, op))
    return dict(zip(keys, packed.tolist()))
