"""`dualmode-rl filter`: the accuracy pre-filter on a prompt dataset, with the configured model and rewards."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from dualmode_rl.filtering.accuracy import INPUT_SHARE, run_filter
from dualmode_rl.rewards.types import RewardOutput

from .components import accuracy_reward_name, build_engine, build_reward_pool
from .config import DualModeConfig
from .data import default_source, load_prompts
from .preflight import check_generation_limits, check_model


class AccuracyScores:
    """Training's rewards, scored as the accuracy reward (eval.reward) alone when they include it: a
    prompt is "always solved" by its answers, not by shaping terms such as arithmetic_steps."""

    def __init__(self, pool, accuracy_reward: str | None):
        self.pool, self.accuracy_reward = pool, accuracy_reward

    def score(self, inputs):
        return [RewardOutput(o.component(self.accuracy_reward), o.error, o.extras) for o in self.pool.score(inputs)]


def mix_control(cfg: DualModeConfig) -> dict:
    """run_filter's mode-mix settings from filter.joint / filter.rebalance (to data.reasoning_share, else
    the input's own share)."""
    share = cfg.data.reasoning_share if cfg.data.reasoning_share is not None else INPUT_SHARE
    return {"joint": cfg.filter.joint, "rebalance_to": share if cfg.filter.rebalance else None}


def run_filter_command(cfg: DualModeConfig, data: str | None = None, out: str | None = None, split: str = "train") -> dict:
    model = check_model(cfg.model_path)
    source = data or cfg.data.train or default_source(cfg)
    dataset = load_prompts(cfg, source, split)
    if cfg.filter.max_prompts:
        dataset = dataset.select(range(min(cfg.filter.max_prompts, len(dataset))))
    check_generation_limits(cfg, model.tokenizer, dataset, source)
    out_dir = Path(out or cfg.filter.out or Path(cfg.train.out).parent / "filter")
    rewards = build_reward_pool(cfg)
    engine = build_engine(cfg, cfg.model_path)
    run_key = {"model": str(Path(cfg.model_path).resolve()), "rollout": cfg.rollout.model_dump(mode="json"),
               "rewards": cfg.rewards.model_dump(mode="json"), "accuracy_reward": cfg.eval.reward}
    try:
        report = run_filter(engine, AccuracyScores(rewards, accuracy_reward_name(cfg, rewards)), dataset, out_dir,
                            samples=cfg.filter.samples, run_key=run_key, seed=cfg.train.seed, **mix_control(cfg))
    finally:
        engine.shutdown()
        rewards.close()
    return asdict(report)
