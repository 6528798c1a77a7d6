"""Builds from the config: the rollout engine settings, an in-process engine, the reward pool, the learner's
settings and placement."""
from __future__ import annotations

from pathlib import Path

from dualmode_rl.rewards.pool import RewardPool
from dualmode_rl.rewards.registry import load_reward
from dualmode_rl.rl.learner import LearnerConfig
from dualmode_rl.rollout.modes import ModeSampling, SamplingConfig
from dualmode_rl.rollout.types import MODES

from .checkpoint import check_model_folder
from .config import DualModeConfig
from .learner_group import LearnerPlacement


def sampling_config(cfg: DualModeConfig, evaluation: bool = False) -> SamplingConfig:
    """Training's sampling (rollout.*), or with `evaluation` eval.*'s temperature and top-p at rollout's lengths."""
    r, e = cfg.rollout, cfg.eval
    reasoning, non_reasoning = (e.reasoning, e.non_reasoning) if evaluation else (r.reasoning, r.non_reasoning)
    return SamplingConfig(
        reasoning=ModeSampling(reasoning.temperature, reasoning.top_p, r.reasoning.max_tokens),
        non_reasoning=ModeSampling(non_reasoning.temperature, non_reasoning.top_p, r.non_reasoning.max_tokens),
        seed=cfg.train.seed,
    )


def engine_kwargs(cfg: DualModeConfig, model_path: str | Path, evaluation: bool = False) -> dict:
    return {
        "model_path": str(model_path),
        "sampling": sampling_config(cfg, evaluation),
        "max_model_len": cfg.rollout.max_model_len,
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


def build_reward_pool(cfg: DualModeConfig, evaluation: bool = False) -> RewardPool:
    """Loads every reward plug-in now, so a bad one stops start-up with its name. `evaluation`: the
    accuracy reward (eval.reward) alone."""
    specs = [(cfg.eval.reward, 1.0)] if evaluation else [(spec.name, spec.weight) for spec in cfg.rewards.rewards]
    rewards = [(load_reward(name), weight) for name, weight in specs]
    return RewardPool(rewards, num_workers=cfg.rewards.num_workers, timeout_s=cfg.rewards.timeout_s)


def accuracy_reward_name(cfg: DualModeConfig, pool: RewardPool) -> str | None:
    """The name under which the pool reports eval.reward's own score (RewardOutput.extras), when
    training uses it; a plug-in's name is its function's, not its spec. None: training does not."""
    for spec, (fn, _) in zip(cfg.rewards.rewards, pool.rewards):
        if spec.name == cfg.eval.reward:
            return fn.name
    return None


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
    """Every rank's LearnerConfig: learner.* one to one (off_policy_cap is tis_cap), the loss settings
    from algorithm.*, the sampling temperatures from rollout.*. The learner always starts from the SFT
    checkpoint, also the reference; a resumed run then loads its trained weights (LearnerGroup.load)."""
    a, section = cfg.algorithm, cfg.learner.model_dump(exclude=set(PLACEMENT_KEYS))
    section.update(off_policy_correction=off_policy_correction(cfg), tis_cap=section.pop("off_policy_cap"))
    return LearnerConfig(
        model_path=cfg.model_path, **section, loss=a.loss, beta=a.beta, loss_agg=a.loss_aggregation,
        epsilon_low=a.epsilon_low, epsilon_high=a.epsilon_high, max_completion_length=a.max_completion_length,
        seed=cfg.train.seed, total_steps=cfg.train.steps,
        temperatures={mode: getattr(cfg.rollout, mode).temperature for mode in MODES})


def learner_placement(cfg: DualModeConfig) -> LearnerPlacement:
    return LearnerPlacement(**{key: getattr(cfg.learner, key) for key in PLACEMENT_KEYS})
