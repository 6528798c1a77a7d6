"""Builds from the config: the rollout engine settings, an in-process engine, the weight sync, the reward
pool, the learner's settings and placement."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from dualmode_rl.rewards.pool import RewardPool
from dualmode_rl.rewards.registry import load_reward
from dualmode_rl.rl.learner import LearnerConfig
from dualmode_rl.rl.overlong import OverlongRule
from dualmode_rl.rollout.modes import ModeSampling, SamplingConfig
from dualmode_rl.rollout.placement import SHARED_GPU_CLAIM, colocated_bundles
from dualmode_rl.rollout.pool import PoolPlacement
from dualmode_rl.rollout.registry import build_engine
from dualmode_rl.rollout.types import MODES, Engine

from .checkpoint import check_model_folder
from .config import CPU_MAX_MODEL_LEN, VLLM_ONLY, ConfigError, DualModeConfig, RewardSpec
from .learner_group import LearnerPlacement

log = logging.getLogger(__name__)


def sampling_config(cfg: DualModeConfig, evaluation: bool = False) -> SamplingConfig:
    """Training's sampling (rollout.*), or with `evaluation` eval.*'s temperature, top-p and top-k at
    rollout's lengths and thinking budget."""
    r, e = cfg.rollout, cfg.eval
    reasoning, non_reasoning = (e.reasoning, e.non_reasoning) if evaluation else (r.reasoning, r.non_reasoning)
    return SamplingConfig(
        reasoning=ModeSampling(reasoning.temperature, reasoning.top_p, r.reasoning.max_tokens, top_k=reasoning.top_k,
                               thinking_budget=r.reasoning.thinking_budget),
        non_reasoning=ModeSampling(non_reasoning.temperature, non_reasoning.top_p, r.non_reasoning.max_tokens,
                                   top_k=non_reasoning.top_k),
        seed=cfg.train.seed,
    )


def warn_if_sampling_truncated(cfg: DualModeConfig) -> None:
    for mode in MODES:
        if sampling_config(cfg).for_mode(mode).truncated:
            log.warning("rollout.%s samples with top-p/top-k: the learner scores the full softmax(logits / T), not "
                        "the sampler's distribution (mismatch/logprob_abs shows by how much)", mode)


def max_model_len(cfg: DualModeConfig, model_path: str | Path | None = None) -> int:
    """rollout.max_model_len, or by default the model's max_position_embeddings, at most CPU_MAX_MODEL_LEN
    without GPUs (vLLM's CPU KV cache must hold a whole sequence). With rollout.gpus_per_worker unset,
    "with GPUs" means this process sees one (a CPU-only head node of a GPU cluster: set either key)."""
    if cfg.rollout.max_model_len:
        return cfg.rollout.max_model_len
    model_limit = model_max_length(model_path or cfg.model_path)
    gpus = cfg.rollout.gpus_per_worker
    on_gpus = gpus > 0 if gpus is not None else torch.cuda.is_available()
    return model_limit if on_gpus else min(model_limit, CPU_MAX_MODEL_LEN)


def model_max_length(model_path: str | Path) -> int:
    """The sequence length the model was built for: config.json's max_position_embeddings (text config)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_path))
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(config.max_position_embeddings)


def engine_kwargs(cfg: DualModeConfig, model_path: str | Path, evaluation: bool = False) -> dict:
    """The engine's keyword arguments: what every engine takes, and rollout.*'s vLLM settings for the vLLM engine."""
    r = cfg.rollout
    check_engine_fits_model(cfg, model_path)
    common = {
        "model_path": str(model_path),
        "sampling": sampling_config(cfg, evaluation),
        "max_model_len": max_model_len(cfg, model_path),
        "seed": cfg.train.seed,
        "dtype": r.dtype,
        "logprobs_mode": r.logprobs_mode,
    }
    if r.engine != "vllm":
        return common
    return {**common, **{key: getattr(r, key) for key in VLLM_ONLY}}


def rollout_engine_kwargs(cfg: DualModeConfig, model_path: str | Path, policy_version: int, weight_transfer: str) -> dict:
    """Settings of the training rollout engines: also, for vLLM, colocation (sleep mode) and how weights arrive."""
    kwargs = {**engine_kwargs(cfg, model_path), "policy_version": policy_version}
    if cfg.rollout.engine != "vllm":
        return kwargs
    return {**kwargs, "weight_transfer": weight_transfer, "enable_sleep_mode": cfg.rollout.placement == "colocated"}


def check_engine_fits_model(cfg: DualModeConfig, model_path: str | Path) -> None:
    """What vLLM would refuse about the model, before any engine starts: TP must divide the heads."""
    config_file = Path(model_path) / "config.json"
    if not config_file.is_file():
        return
    text_config = json.loads(config_file.read_text())
    text_config = text_config.get("text_config", text_config)
    tp, heads = cfg.rollout.tensor_parallel_size, text_config.get("num_attention_heads")
    if heads and heads % tp:
        raise ConfigError(f"config key 'rollout.tensor_parallel_size': {tp} does not divide the model's "
                          f"{heads} attention heads ({config_file})")


def learner_device(cfg: DualModeConfig) -> str:
    """Where the learner ranks compute: learner.device, "auto" being the GPU when each rank's bundle has one."""
    device = cfg.learner.device
    if device != "auto":
        return device
    return "cuda" if cfg.learner.gpus_per_worker > 0 else "cpu"


def weight_transfer_backend(cfg: DualModeConfig, learner_device: str, nodes: int = 1) -> str:
    """rollout.weight_transfer with "auto" resolved: vLLM's nccl / ipc when the learner is on a GPU,
    else dualmode-rl's shm engine when the cluster has one node (every engine is on the trainer's) and
    its gloo engine across `nodes` > 1; the "hf" engine loads files."""
    r = cfg.rollout
    on_gpu = learner_device.startswith("cuda")
    if r.weight_transfer in ("nccl", "ipc") and not on_gpu:
        raise ConfigError(f"config key 'rollout.weight_transfer': '{r.weight_transfer}' sends from a GPU, but the "
                          f"learner runs on {learner_device}; use 'gloo', 'shm' or 'auto'")
    if r.weight_transfer != "auto":
        return r.weight_transfer
    if r.engine == "hf":
        return "file"
    if on_gpu:
        return "ipc" if r.placement == "colocated" else "nccl"
    return "shm" if nodes == 1 else "gloo"


def build_weight_sync(cfg: DualModeConfig, pool, learner, backend: str):
    """The driver's weight sync (rollout/weight_transfer/sync.py). `learner`: the LearnerGroup, whose rank 0
    is trainer rank 0 of vLLM's weight-transfer group, or for "file" writes the weight file."""
    from dualmode_rl.rollout.weight_transfer.sync import BroadcastSync, FileSync

    r = cfg.rollout
    colocated = r.placement == "colocated"
    if backend == "file":
        return FileSync(pool, learner.sync_weights_to_file, colocated)
    return BroadcastSync(pool, learner, backend, int(r.weight_transfer_bucket_mb * 2**20),
                         r.weight_transfer_timeout_s, colocated)


def build_local_engine(cfg: DualModeConfig, model_path: str | Path, evaluation: bool = False) -> Engine:
    """An in-process engine (eval, filter), sampling as training does unless `evaluation`. Build it only
    under `if __name__ == "__main__"`: vLLM spawns."""
    check_model_folder(model_path)
    return build_engine(cfg.rollout.engine, engine_kwargs(cfg, model_path, evaluation))


def build_reward_pool(cfg: DualModeConfig, evaluation: bool = False, errors_file: Path | None = None) -> RewardPool:
    """Loads every reward plug-in now, so a bad one stops start-up with its name. `evaluation`: the
    accuracy reward (eval.reward) alone. `errors_file`: where first occurrences of errors go (errors.jsonl)."""
    specs = [accuracy_spec(cfg)] if evaluation else cfg.rewards.rewards
    return RewardPool([(load_configured_reward(spec), spec.weight) for spec in specs],
                      num_workers=cfg.rewards.num_workers, timeout_s=cfg.rewards.timeout_s, errors_file=errors_file,
                      batch_size=cfg.rewards.batch_size)


def load_configured_reward(spec: RewardSpec):
    """A `rewards.rewards` entry's reward, with its plug-in options (rewards.registry.load_reward)."""
    return load_reward(spec.name, args=spec.args, columns=spec.columns, completion_format=spec.completion_format,
                       score_range=spec.range)


def accuracy_spec(cfg: DualModeConfig) -> RewardSpec:
    """eval.reward, with the options of the rewards.rewards entry of that name when training uses it."""
    same = [spec for spec in cfg.rewards.rewards if spec.name == cfg.eval.reward]
    return same[0].model_copy(update={"weight": 1.0}) if same else RewardSpec(name=cfg.eval.reward)


def accuracy_reward_name(cfg: DualModeConfig, pool: RewardPool) -> str | None:
    """The name under which the pool reports eval.reward's own score (RewardOutput.extras), when
    training uses it; a plug-in's name is its function's, not its spec. None: training does not."""
    for spec, (fn, _) in zip(cfg.rewards.rewards, pool.rewards):
        if spec.name == cfg.eval.reward:
            return fn.name
    return None


def overlong_rules(cfg: DualModeConfig) -> dict[str, OverlongRule]:
    """algorithm.overlong per mode, at rollout.<mode>.max_tokens (rl/overlong.py); modes without one left out."""
    a = cfg.algorithm
    return {mode: OverlongRule(getattr(a.overlong, mode), getattr(cfg.rollout, mode).max_tokens,
                               getattr(a.overlong_buffer, mode))
            for mode in MODES if getattr(a.overlong, mode) != "none"}


# learner.* keys that place the learner group rather than configure each rank's LearnerConfig
PLACEMENT_KEYS = ("num_workers", "gpus_per_worker", "cpus_per_worker", "torch_threads")


def off_policy_correction(cfg: DualModeConfig) -> str:
    """learner.off_policy_correction, with "auto" made concrete: truncated importance sampling for AGAPO
    whenever samples can be off-policy (asynchronous rollout, several optimizer steps per batch)."""
    chosen = cfg.learner.off_policy_correction
    if chosen != "auto":
        return chosen
    off_policy = cfg.rollout.max_staleness > 0 or cfg.learner.steps_per_batch > 1
    return "tis" if cfg.algorithm.loss == "agapo" and off_policy else "none"


def learner_config(cfg: DualModeConfig) -> LearnerConfig:
    """Every rank's LearnerConfig: learner.* one to one, the loss settings
    from algorithm.*, the sampling temperatures from rollout.*. The learner always starts from the SFT
    checkpoint, also the reference; a resumed run then loads its trained weights (LearnerGroup.load)."""
    a, section = cfg.algorithm, cfg.learner.model_dump(exclude=set(PLACEMENT_KEYS))
    section.update(off_policy_correction=off_policy_correction(cfg))
    return LearnerConfig(
        model_path=cfg.model_path, **section, loss=a.loss, beta=a.beta, loss_agg=a.loss_aggregation,
        epsilon_low=a.epsilon_low, epsilon_high=a.epsilon_high, max_completion_length=a.max_completion_length,
        seed=cfg.train.seed, total_steps=cfg.train.steps,
        temperatures={mode: getattr(cfg.rollout, mode).temperature for mode in MODES})


def learner_placement(cfg: DualModeConfig) -> LearnerPlacement:
    """The learner group's placement; colocated, its bundles also hold the rollout engines
    (rollout/placement.py) and each rank claims its share of the GPU it shares with one."""
    placement = LearnerPlacement(**{key: getattr(cfg.learner, key) for key in PLACEMENT_KEYS})
    r = cfg.rollout
    if r.placement == "colocated":
        placement.bundles = colocated_bundles(placement.bundle(), r.num_workers, r.tensor_parallel_size,
                                              r.cpus_per_worker)
        placement.actor_gpus = SHARED_GPU_CLAIM if placement.gpus_per_worker else None
    return placement


def pool_placement(cfg: DualModeConfig, learner_group) -> PoolPlacement:
    """The rollout pool's placement; colocated, in `learner_group`'s placement group."""
    r = cfg.rollout
    colocated = r.placement == "colocated"
    return PoolPlacement(num_cpus_per_worker=r.cpus_per_worker, num_gpus_per_worker=r.gpus_per_worker,
                         cpu_binds=r.cpu_binds, shared_group=learner_group.placement_group if colocated else None,
                         shared_gpus=colocated and cfg.learner.gpus_per_worker > 0)
