"""What the progress bars of `dualmode-rl train` and `dualmode-rl eval` say next to the count."""
from __future__ import annotations

from dualmode_rl.rollout.types import MODES


def per_mode(values: dict[str, float]) -> str:
    """'reasoning 0.412, non_reasoning 0.300' (modes in their usual order; absent ones left out)."""
    return ", ".join(f"{mode} {values[mode]:.3f}" for mode in MODES if mode in values)


def step_postfix(metrics: dict[str, float]) -> str:
    """The train bar's text after a step: the mean reward of each mode (the bar itself shows s/step)."""
    rewards = per_mode({mode: metrics[f"{mode}/reward"] for mode in MODES if f"{mode}/reward" in metrics})
    return f"reward: {rewards}" if rewards else ""
