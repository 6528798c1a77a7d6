"""Verifiers and reward plug-ins: math (Math-Verify), code (sandbox), format, custom rewards."""
from dualmode_rl.rewards.pool import RewardPool
from dualmode_rl.rewards.registry import RewardPluginError, load_reward
from dualmode_rl.rewards.types import RewardInput, RewardOutput

__all__ = ["RewardInput", "RewardOutput", "RewardPool", "RewardPluginError", "load_reward"]
