"""Verifiers and reward plug-ins: math (Math-Verify), code (sandbox), format, custom rewards."""
from rewards.pool import RewardPool
from rewards.registry import RewardPluginError, load_reward
from rewards.types import RewardInput, RewardOutput

__all__ = ["RewardInput", "RewardOutput", "RewardPool", "RewardPluginError", "load_reward"]
