"""Builds the rollout engine settings, an in-process engine, the weight sync and the reward pool from the config."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from dualmode_rl.rewards.pool import RewardPool
from dualmode_rl.rewards.registry import load_reward
from dualmode_rl.rl.overlong import OverlongRule
from dualmode_rl.rollout.modes import ModeSampling, SamplingConfig
from dualmode_rl.rollout.types import MODES

from .checkpoint import check_model_folder
from .config import CPU_MAX_MODEL_LEN, ConfigError, DualModeConfig


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
    """The engine's settings (VllmEngine / HfEngine keywords), every rollout.* engine key included."""
    r = cfg.rollout
    check_engine_fits_model(cfg, model_path)
    return {
        "model_path": str(model_path),
        "sampling": sampling_config(cfg, evaluation),
        "max_model_len": max_model_len(cfg, model_path),
        "seed": cfg.train.seed,
        "dtype": r.dtype,
        "enforce_eager": r.enforce_eager,
        "gpu_memory_utilization": r.gpu_memory_utilization,
        "tensor_parallel_size": r.tensor_parallel_size,
        "logprobs_mode": r.logprobs_mode,
    }


def rollout_engine_kwargs(cfg: DualModeConfig, model_path: str | Path, policy_version: int, weight_transfer: str) -> dict:
    """Settings of the training rollout engines: also colocation (sleep mode) and how weights arrive."""
    return {**engine_kwargs(cfg, model_path), "policy_version": policy_version, "weight_transfer": weight_transfer,
            "enable_sleep_mode": cfg.rollout.placement == "colocated"}


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


def weight_transfer_backend(cfg: DualModeConfig, learner_device: str) -> str:
    """rollout.weight_transfer with "auto" resolved: vLLM's nccl / ipc when the learner is on a GPU,
    dualmode-rl's gloo engine otherwise; the "hf" engine loads files."""
    r = cfg.rollout
    on_gpu = learner_device.startswith("cuda")
    if r.weight_transfer in ("nccl", "ipc") and not on_gpu:
        raise ConfigError(f"config key 'rollout.weight_transfer': '{r.weight_transfer}' sends from a GPU, but the "
                          f"learner runs on {learner_device}; use 'gloo' or 'auto'")
    if r.weight_transfer != "auto":
        return r.weight_transfer
    if r.engine == "hf":
        return "file"
    if on_gpu:
        return "ipc" if r.placement == "colocated" else "nccl"
    return "gloo"


def build_weight_sync(cfg: DualModeConfig, pool, learner, backend: str):
    """The driver's weight sync (rollout/weight_transfer/sync.py); the learner is trainer rank 0."""
    from dualmode_rl.rollout.weight_transfer.sync import BroadcastSync, FileSync, LocalTrainer

    r = cfg.rollout
    weights = lambda: policy_weights(learner)  # noqa: E731
    colocated = r.placement == "colocated"
    if backend == "file":
        return FileSync(pool, weights, colocated)
    return BroadcastSync(pool, LocalTrainer(weights), backend, int(r.weight_transfer_bucket_mb * 2**20),
                         r.weight_transfer_timeout_s, colocated)


def policy_weights(learner) -> dict:
    """What an update sends: the whole policy, or with LoRA only the merged modules LoRA changed."""
    weights = learner.export_weights(merged=True)
    if learner.config.lora is None:
        return weights
    adapted = {_module_weight(name) for name in learner.export_weights(merged=False)}
    return {name: t for name, t in weights.items() if name in adapted}


def _module_weight(peft_name: str) -> str:
    """PEFT's `base_model.model.<module>.lora_A.weight` -> `<module>.weight`."""
    return peft_name.removeprefix("base_model.model.").split(".lora_")[0] + ".weight"


def build_engine(cfg: DualModeConfig, model_path: str | Path, evaluation: bool = False):
    """An in-process engine (eval, filter), sampling as training does unless `evaluation`. Build it only
    under `if __name__ == "__main__"`: vLLM spawns."""
    check_model_folder(model_path)
    if cfg.rollout.engine == "hf":
        from dualmode_rl.rollout.hf_engine import HfEngine as VllmEngine
    else:
        from dualmode_rl.rollout.engine import VllmEngine

    return VllmEngine(**engine_kwargs(cfg, model_path, evaluation))


def build_reward_pool(cfg: DualModeConfig, evaluation: bool = False, errors_file: Path | None = None) -> RewardPool:
    """Loads every reward plug-in now, so a bad one stops start-up with its name. `evaluation`: the
    accuracy reward (eval.reward) alone. `errors_file`: where first occurrences of errors go (errors.jsonl)."""
    specs = [(cfg.eval.reward, 1.0)] if evaluation else [(spec.name, spec.weight) for spec in cfg.rewards.rewards]
    rewards = [(load_reward(name), weight) for name, weight in specs]
    return RewardPool(rewards, num_workers=cfg.rewards.num_workers, timeout_s=cfg.rewards.timeout_s,
                      errors_file=errors_file)


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
