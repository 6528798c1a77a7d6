"""Every rollout.* engine setting reaches vLLM's engine arguments; values vLLM would reject fail at config
load naming the key; the placement plan for GPU clusters (no GPU needed)."""
from __future__ import annotations

import pytest

from dualmode_rl.orchestration.components import (learner_placement, pool_placement, rollout_engine_kwargs,
                                                  weight_transfer_backend)
from dualmode_rl.orchestration.config import ConfigError, RolloutConfig, load_config
from dualmode_rl.rollout.vllm_engine import VllmEngine
from dualmode_rl.rollout.placement import SHARED_GPU_CLAIM, plan_engine
from dualmode_rl.rollout.pool import PoolPlacement

# rollout.<key>=<value> -> the vllm.LLM keyword it sets and the value vLLM's EngineArgs then holds
REACHES_VLLM = {
    "dtype": ("bfloat16", "dtype", "bfloat16"),
    "enforce_eager": (True, "enforce_eager", True),
    "gpu_memory_utilization": (0.5, "gpu_memory_utilization", 0.5),
    "max_model_len": (768, "max_model_len", 768),  # the default is the model's 1024
    "tensor_parallel_size": (2, "tensor_parallel_size", 2),
    "logprobs_mode": ("raw_logprobs", "logprobs_mode", "raw_logprobs"),
    "placement": ("colocated", "enable_sleep_mode", True),
    "weight_transfer": ("gloo", "weight_transfer_config", "dualmode_rl_gloo"),
}
# the other keys, and where they act instead
ELSEWHERE = {
    "engine": "rollout.registry.build_engine", "num_workers": "RolloutPool", "samples_per_prompt": "GenerationRequest.n",
    "reasoning": "SamplingConfig", "non_reasoning": "SamplingConfig", "gpus_per_worker": "rollout.placement",
    "cpu_binds": "PoolPlacement", "cpus_per_worker": "PoolPlacement", "max_staleness": "RolloutAhead",
    "weight_transfer_bucket_mb": "BroadcastSync", "weight_transfer_timeout_s": "BroadcastSync",
    "weight_file_dir": "LearnerGroup (file path)", "in_process": "VllmEngine._start (VLLM_ENABLE_V1_MULTIPROCESSING)",
}


def test_every_rollout_key_is_accounted_for():
    assert set(RolloutConfig.model_fields) == set(REACHES_VLLM) | set(ELSEWHERE)


@pytest.mark.parametrize("key", sorted(REACHES_VLLM))
def test_rollout_engine_setting_reaches_vllm_engine_args(key, tiny_model_dir):
    from vllm.engine.arg_utils import EngineArgs

    value, llm_key, expected = REACHES_VLLM[key]
    cfg = load_config(None, [f"rollout.{key}={value}"])
    kwargs = rollout_engine_kwargs(cfg, tiny_model_dir, 0, weight_transfer_backend(cfg, "cpu"))
    llm_kwargs = VllmEngine.llm_kwargs(kwargs, on_cpu=False)  # as a GPU worker builds it
    args = EngineArgs(**llm_kwargs)  # vLLM's own engine arguments accept every keyword
    held = getattr(args, llm_key)
    assert (held.backend if llm_key == "weight_transfer_config" else held) == expected
    default = VllmEngine.llm_kwargs(rollout_engine_kwargs(load_config(), tiny_model_dir, 0, "file"), on_cpu=False)
    assert default.get(llm_key) != llm_kwargs[llm_key], f"rollout.{key}={value} did not change {llm_key}"


def test_auto_settings_resolve_by_platform(tiny_model_dir):
    cfg = load_config()
    kwargs = rollout_engine_kwargs(cfg, tiny_model_dir, 0, weight_transfer_backend(cfg, "cpu"))
    cpu, gpu = VllmEngine.llm_kwargs(kwargs, on_cpu=True), VllmEngine.llm_kwargs(kwargs, on_cpu=False)
    assert (cpu["dtype"], cpu["enforce_eager"], cpu["gpu_memory_utilization"]) == ("float32", True, 0.1)
    assert (gpu["dtype"], gpu["enforce_eager"], gpu["gpu_memory_utilization"]) == ("auto", False, 0.85)
    assert cpu["weight_transfer_config"] == {"backend": "dualmode_rl_shm"}  # one node: the shared-memory engine
    assert weight_transfer_backend(cfg, "cpu", nodes=2) == "gloo"  # across nodes: the socket one
    colocated = load_config(None, ["rollout.placement=colocated"])
    shared = VllmEngine.llm_kwargs(rollout_engine_kwargs(colocated, tiny_model_dir, 0, "file"), on_cpu=False)
    assert shared["enable_sleep_mode"] and shared["gpu_memory_utilization"] == 0.45
    assert not VllmEngine.llm_kwargs(rollout_engine_kwargs(colocated, tiny_model_dir, 0, "file"), True)["enable_sleep_mode"]
    assert weight_transfer_backend(cfg, "cuda:0") == "nccl" and weight_transfer_backend(colocated, "cuda") == "ipc"
    assert weight_transfer_backend(load_config(None, ["rollout.engine=hf"]), "cpu") == "file"
    with pytest.raises(ConfigError, match=r"rollout\.weight_transfer.*learner runs on cpu"):
        weight_transfer_backend(load_config(None, ["rollout.weight_transfer=nccl"]), "cpu")


@pytest.mark.parametrize("overrides, key", [
    (["rollout.dtype=float64"], "rollout.dtype"),
    (["rollout.gpu_memory_utilization=1.5"], "rollout.gpu_memory_utilization"),
    (["rollout.tensor_parallel_size=0"], "rollout.tensor_parallel_size"),
    (["rollout.logprobs_mode=raw"], "rollout.logprobs_mode"),
    (["rollout.tensor_parallel_size=2", "rollout.gpus_per_worker=1"], "rollout.gpus_per_worker"),
    (["rollout.gpus_per_worker=2"], "rollout.gpus_per_worker"),
    (["rollout.placement=colocated", "rollout.max_staleness=1"], "rollout.placement"),
    (["rollout.placement=colocated", "rollout.weight_transfer=nccl"], "rollout.weight_transfer"),
    (["rollout.weight_transfer=ipc"], "rollout.weight_transfer"),
    (["rollout.engine=hf", "rollout.weight_transfer=gloo"], "rollout.weight_transfer"),
    (["rollout.weight_transfer_bucket_mb=0"], "rollout.weight_transfer_bucket_mb"),
    (["rollout.placement=colocated", "rollout.num_workers=2"], "learner.num_workers"),
    (["rollout.placement=colocated", "rollout.gpus_per_worker=1"], "rollout.gpus_per_worker"),
    (["rollout.placement=colocated", "learner.gpus_per_worker=0.5"], "learner.gpus_per_worker"),
])
def test_values_vllm_would_reject_fail_at_config_load_naming_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, overrides)


def test_tensor_parallel_size_must_divide_the_models_heads(tiny_model_dir):
    cfg = load_config(None, ["rollout.tensor_parallel_size=4"])  # the tiny model has 2 heads
    with pytest.raises(ConfigError, match=r"rollout\.tensor_parallel_size.*2 attention heads"):
        rollout_engine_kwargs(cfg, tiny_model_dir, 0, "gloo")


def test_tp2_on_a_gpu_cluster_places_each_rank_on_a_one_gpu_bundle():
    plan = PoolPlacement(num_cpus_per_worker=1).engine(tensor_parallel_size=2, cluster_gpus=8)
    assert plan.bundles == [{"CPU": 1, "GPU": 1.0}, {"GPU": 1.0}]  # vLLM refuses bundles of more than 1 GPU
    assert plan.env == {"VLLM_RAY_BUNDLE_INDICES": "0,1"}  # vLLM's Ray executor puts TP rank i on bundle i
    assert plan.engine_kwargs == {"distributed_executor_backend": "ray"}
    assert plan.actor_gpus == 0 and plan.capture_child_tasks  # the TP workers hold the GPUs, in this group


def test_gpus_per_engine_default_to_the_tp_size_on_a_gpu_cluster_and_zero_on_cpu():
    single = PoolPlacement().engine(tensor_parallel_size=1, cluster_gpus=4)
    assert single.bundles == [{"CPU": 1, "GPU": 1}] and single.actor_gpus == 1 and not single.env
    cpu = PoolPlacement().engine(tensor_parallel_size=1, cluster_gpus=0)
    assert cpu.bundles == [{"CPU": 1}] and cpu.actor_gpus == 0 and not cpu.engine_kwargs
    shared = plan_engine(1, 0.5, 1)  # a share of one GPU (colocated)
    assert shared.bundles == [{"CPU": 1, "GPU": 0.5}] and shared.actor_gpus == 0.5


class LearnerGroupStandIn:
    """What pool_placement reads of a LearnerGroup: its placement group (a Ray one needs a cluster)."""

    placement_group = object()


def test_colocated_tp2_engines_share_the_learner_ranks_one_gpu_bundles():
    """8 GPUs: 8 learner ranks and 4 engines of TP 2. Bundle i holds learner rank i and TP rank i % 2 of
    engine i // 2 on one GPU, each claiming a share of it; the engine's actor adds its CPUs to its first
    bundle; vLLM's TP workers go to the engine's own two bundles, with the same share."""
    cfg = load_config(None, ["rollout.placement=colocated", "rollout.num_workers=4", "rollout.tensor_parallel_size=2",
                             "learner.num_workers=8", "learner.gpus_per_worker=1", "learner.cpus_per_worker=2"])
    learner = learner_placement(cfg)
    assert learner.group_bundles() == [{"CPU": 3.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 1.0}] * 4  # never > 1 GPU
    assert learner.rank_gpus() == SHARED_GPU_CLAIM < 1

    pool = pool_placement(cfg, LearnerGroupStandIn)
    engines = [pool.engine(tensor_parallel_size=2, cluster_gpus=8, index=i) for i in range(4)]
    assert pool.shared_group is LearnerGroupStandIn.placement_group
    assert [e.bundle_index for e in engines] == [0, 2, 4, 6]
    assert [e.env["VLLM_RAY_BUNDLE_INDICES"] for e in engines] == ["0,1", "2,3", "4,5", "6,7"]
    assert all(float(e.env["VLLM_RAY_PER_WORKER_GPUS"]) + learner.rank_gpus() <= 1 for e in engines)
    assert all(e.actor_gpus == 0 and e.capture_child_tasks and e.bundles == [] for e in engines)
    assert all(e.engine_kwargs == {"distributed_executor_backend": "ray"} for e in engines)


def test_colocated_tp1_engines_claim_a_share_of_their_ranks_gpu_and_cpu_runs_take_none():
    gpu = load_config(None, ["rollout.placement=colocated", "rollout.num_workers=2", "learner.num_workers=2",
                             "learner.gpus_per_worker=1"])
    engines = [pool_placement(gpu, LearnerGroupStandIn).engine(1, 2, i) for i in range(2)]
    assert [(e.bundle_index, e.actor_gpus, e.env) for e in engines] == [(0, SHARED_GPU_CLAIM, {}), (1, SHARED_GPU_CLAIM, {})]
    assert learner_placement(gpu).rank_gpus() + SHARED_GPU_CLAIM <= 1
    cpu = load_config(None, ["rollout.placement=colocated"])
    assert learner_placement(cpu).group_bundles() == [{"CPU": 2.0}] and learner_placement(cpu).rank_gpus() == 0
    assert pool_placement(cpu, LearnerGroupStandIn).engine(1, 0, 0).actor_gpus == 0
    separate = pool_placement(load_config(), LearnerGroupStandIn)
    assert separate.shared_group is None and separate.engine(1, 0).bundles == [{"CPU": 1.0}]
