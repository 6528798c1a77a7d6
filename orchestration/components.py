"""Builds the rollout engine settings, an in-process engine and the reward pool from the config."""
from __future__ import annotations

from pathlib import Path

from dualmode_rl.rewards.pool import RewardPool
from dualmode_rl.rewards.registry import load_reward
from dualmode_rl.rollout.modes import ModeSampling, SamplingConfig

from .checkpoint import check_model_folder
from .config import CPU_MAX_MODEL_LEN, DualModeConfig, RewardSpec


def sampling_config(cfg: DualModeConfig, evaluation: bool = False) -> SamplingConfig:
    """Training's sampling (rollout.*), or with `evaluation` eval.*'s temperature and top-p at rollout's lengths."""
    r, e = cfg.rollout, cfg.eval
    reasoning, non_reasoning = (e.reasoning, e.non_reasoning) if evaluation else (r.reasoning, r.non_reasoning)
    return SamplingConfig(
        reasoning=ModeSampling(reasoning.temperature, reasoning.top_p, r.reasoning.max_tokens),
        non_reasoning=ModeSampling(non_reasoning.temperature, non_reasoning.top_p, r.non_reasoning.max_tokens),
        seed=cfg.train.seed,
    )


def max_model_len(cfg: DualModeConfig) -> int:
    """rollout.max_model_len, or by default the model's max_position_embeddings, at most CPU_MAX_MODEL_LEN
    without GPUs (vLLM's CPU KV cache must hold a whole sequence)."""
    if cfg.rollout.max_model_len:
        return cfg.rollout.max_model_len
    model_limit = model_max_length(cfg.model_path)
    return model_limit if cfg.rollout.gpus_per_worker > 0 else min(model_limit, CPU_MAX_MODEL_LEN)


def model_max_length(model_path: str | Path) -> int:
    """The sequence length the model was built for: config.json's max_position_embeddings (text config)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model_path))
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(config.max_position_embeddings)


def engine_kwargs(cfg: DualModeConfig, model_path: str | Path, evaluation: bool = False) -> dict:
    return {
        "model_path": str(model_path),
        "sampling": sampling_config(cfg, evaluation),
        "max_model_len": max_model_len(cfg),
        "seed": cfg.train.seed,
        "gpu_memory_utilization": cfg.rollout.gpu_memory_utilization,
        "tensor_parallel_size": cfg.rollout.tensor_parallel_size,
    }


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
