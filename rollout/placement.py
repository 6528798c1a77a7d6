"""Where each rollout engine runs: one Ray placement group per engine, laid out as vLLM expects.

- CPU machines: one bundle of CPUs; vLLM runs its workers inside the rollout actor.
- GPUs, tensor_parallel_size 1: one bundle holding the engine's GPU (or a share of one); the rollout
  actor takes it and vLLM runs in-process on it.
- GPUs, tensor_parallel_size > 1: `tp` bundles of exactly one GPU each. vLLM's Ray executor refuses
  bundles of more than one GPU ("Placement group bundle cannot have more than 1 GPU") and places one
  worker actor per TP rank on the bundles listed in VLLM_RAY_BUNDLE_INDICES. The rollout actor sits in
  bundle 0 without a GPU and captures the placement group for its children, so vLLM (which reads it
  with `ray.util.get_current_placement_group()` inside the actor) uses this group instead of making
  its own. As OpenRLHF and slime place their engines.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EnginePlacement:
    bundles: list[dict[str, float]]  # the engine's placement group
    actor_cpus: float
    actor_gpus: float  # what the rollout actor itself claims in bundle 0
    capture_child_tasks: bool  # vLLM's TP worker actors land in this group
    env: dict[str, str] = field(default_factory=dict)  # set in the rollout actor before vLLM starts
    engine_kwargs: dict = field(default_factory=dict)  # added to the engine's settings


def plan_engine(tensor_parallel_size: int, gpus_per_engine: float, cpus_per_engine: float) -> EnginePlacement:
    tp = tensor_parallel_size
    if gpus_per_engine == 0:
        return EnginePlacement([{"CPU": cpus_per_engine}], cpus_per_engine, 0, capture_child_tasks=False)
    if tp == 1:
        if gpus_per_engine > 1:
            raise ValueError(f"rollout.gpus_per_worker: {gpus_per_engine} GPUs for an engine with "
                             "tensor_parallel_size 1; it uses at most one")
        return EnginePlacement([{"CPU": cpus_per_engine, "GPU": gpus_per_engine}], cpus_per_engine,
                               gpus_per_engine, capture_child_tasks=False)
    if gpus_per_engine != tp:
        raise ValueError(f"rollout.gpus_per_worker: an engine with tensor_parallel_size {tp} needs {tp} whole "
                         f"GPUs, one per rank on a 1-GPU bundle as vLLM's Ray executor requires; got {gpus_per_engine}")
    bundles = [{"CPU": cpus_per_engine, "GPU": 1.0}] + [{"GPU": 1.0} for _ in range(tp - 1)]
    return EnginePlacement(bundles, cpus_per_engine, 0, capture_child_tasks=True,
                           env={"VLLM_RAY_BUNDLE_INDICES": ",".join(str(i) for i in range(tp))},
                           engine_kwargs={"distributed_executor_backend": "ray"})
