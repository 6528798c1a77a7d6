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
- Colocated (`rollout.placement: colocated`): no group of the engines' own. The learner's placement
  group holds them: bundle i carries learner rank i and TP rank i % tp of engine i // tp, and on GPUs
  its one GPU is shared, each claiming SHARED_GPU_CLAIM of it from Ray (the memory split is vLLM's
  gpu_memory_utilization and its sleep mode, not Ray's accounting). Engine e's rollout actor sits in
  bundle e * tp; with tp > 1 its TP workers take bundles e * tp ... e * tp + tp - 1
  (VLLM_RAY_BUNDLE_INDICES), each claiming the same share (VLLM_RAY_PER_WORKER_GPUS).
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
    bundle_index: int = 0  # the rollout actor's bundle in the group


# What a learner rank and an engine's TP rank each claim of the GPU they share when colocated: Ray
# only needs the two claims to fit in the bundle's one GPU.
SHARED_GPU_CLAIM = 0.5


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


def check_colocation(engines: int, tensor_parallel_size: int, learner_ranks: int) -> None:
    """Colocation pairs each learner rank with one engine rank: the counts must match."""
    if engines * tensor_parallel_size != learner_ranks:
        raise ValueError(f"rollout.placement 'colocated' puts one engine rank beside each learner rank: "
                         f"rollout.num_workers {engines} x rollout.tensor_parallel_size {tensor_parallel_size} "
                         f"must equal learner.num_workers {learner_ranks}")


def colocated_bundles(learner_bundle: dict[str, float], engines: int, tensor_parallel_size: int,
                      cpus_per_engine: float) -> list[dict[str, float]]:
    """The shared placement group: learner rank i's bundle, plus the CPUs of the rollout actor that sits
    in it (one per engine, in its first bundle). A GPU bundle keeps its one GPU: the ranks share it."""
    tp = tensor_parallel_size
    bundles = []
    for i in range(engines * tp):
        bundle = dict(learner_bundle)
        if i % tp == 0:
            bundle["CPU"] = bundle.get("CPU", 0) + cpus_per_engine
        bundles.append(bundle)
    return bundles


def plan_colocated_engine(index: int, tensor_parallel_size: int, cpus_per_engine: float, gpus: bool) -> EnginePlacement:
    """Engine `index` in the learner's placement group (colocated_bundles)."""
    tp, first = tensor_parallel_size, index * tensor_parallel_size
    if not gpus or tp == 1:
        return EnginePlacement([], cpus_per_engine, SHARED_GPU_CLAIM if gpus else 0, capture_child_tasks=False,
                               bundle_index=first)
    return EnginePlacement([], cpus_per_engine, 0, capture_child_tasks=True, bundle_index=first,
                           env={"VLLM_RAY_BUNDLE_INDICES": ",".join(str(first + r) for r in range(tp)),
                                "VLLM_RAY_PER_WORKER_GPUS": str(SHARED_GPU_CLAIM)},
                           engine_kwargs={"distributed_executor_backend": "ray"})
