"""Advantage estimators: `[B, G]` rewards (B prompts, G samples each) -> `[B, G]` advantages.

Registry: `ADVANTAGES[name]` and `get_advantage(name, **params)`, which binds keyword
parameters (for example `get_advantage("agapo_neg", all_incorrect_advantage=-0.2)`).

Standard deviations are the unbiased (n - 1) estimate, as `torch.std` and TRL use.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

AdvantageFn = Callable[..., torch.Tensor]


def _check_rewards(rewards: torch.Tensor, name: str, min_group: int = 1) -> torch.Tensor:
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 2:
        raise ValueError(f"advantage '{name}': rewards must be a [B, G] tensor, got {getattr(rewards, 'shape', type(rewards))}")
    if rewards.shape[1] < min_group:
        raise ValueError(f"advantage '{name}' needs at least {min_group} samples per prompt, got G={rewards.shape[1]}")
    if not torch.isfinite(rewards).all():
        raise ValueError(f"advantage '{name}': rewards contain NaN or inf")
    return rewards if rewards.is_floating_point() else rewards.float()


def leave_one_out(rewards: torch.Tensor) -> torch.Tensor:
    """A_loo_i = r_i - mean_{j != i, same group} r_j."""
    group_size = rewards.shape[1]
    others_mean = (rewards.sum(dim=1, keepdim=True) - rewards) / (group_size - 1)
    return rewards - others_mean


def _global_standardise(values: torch.Tensor, eps: float) -> torch.Tensor:
    flat = values.reshape(-1)
    std = flat.std() if flat.numel() > 1 else flat.new_zeros(())
    return (values - flat.mean()) / (std + eps)


def agapo(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """AGAPO as printed in the EXAONE 4.0 report.

    Group stage: leave-one-out. Global stage over all K = B*G samples:
    A_i = (A_loo_i - mean_K(A_loo)) / (std_K(A_loo) + eps).
    A group whose samples share one reward (all right or all wrong) gets exactly zero.
    """
    rewards = _check_rewards(rewards, "agapo", min_group=2)
    return _global_standardise(leave_one_out(rewards), eps)


def agapo_neg(
    rewards: torch.Tensor,
    all_incorrect_advantage: float = -0.1,
    incorrect_reward: float = 0.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """AGAPO with the report's stated intent: all-incorrect groups get a small negative signal.

    Choice made here (the report gives no formula): in the group stage, every sample of a group
    whose rewards are all <= `incorrect_reward` gets `all_incorrect_advantage` (in reward units)
    instead of its leave-one-out value (which would be 0). The global stage is unchanged, so
    these samples stay negative after standardisation (unless every group is all-incorrect),
    while mixed groups keep their leave-one-out ordering, shifted and rescaled slightly by the
    new batch mean and std. All-correct groups still get 0 before the global stage.
    """
    rewards = _check_rewards(rewards, "agapo_neg", min_group=2)
    if all_incorrect_advantage > 0:
        raise ValueError(f"advantage 'agapo_neg': all_incorrect_advantage must be <= 0, got {all_incorrect_advantage}")
    group_stage = leave_one_out(rewards)
    all_incorrect = (rewards <= incorrect_reward).all(dim=1, keepdim=True)
    group_stage = torch.where(all_incorrect, torch.full_like(group_stage, all_incorrect_advantage), group_stage)
    return _global_standardise(group_stage, eps)


def grpo(rewards: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """GRPO: (r - group mean) / (group std + eps); eps = 1e-4 as in TRL."""
    rewards = _check_rewards(rewards, "grpo", min_group=2)
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True)
    return (rewards - mean) / (std + eps)


def dr_grpo(rewards: torch.Tensor) -> torch.Tensor:
    """Dr. GRPO: r - group mean, no std scaling."""
    rewards = _check_rewards(rewards, "dr_grpo")
    return rewards - rewards.mean(dim=1, keepdim=True)


def rloo(rewards: torch.Tensor) -> torch.Tensor:
    """RLOO: r_i - mean of the other samples of the group, no normalisation."""
    rewards = _check_rewards(rewards, "rloo", min_group=2)
    return leave_one_out(rewards)


ADVANTAGES: dict[str, AdvantageFn] = {
    "agapo": agapo,
    "agapo_neg": agapo_neg,
    "grpo": grpo,
    "dr_grpo": dr_grpo,
    "rloo": rloo,
}


def get_advantage(name: str, **params) -> AdvantageFn:
    """The estimator registered under `name`, with `params` bound as keyword arguments."""
    if name not in ADVANTAGES:
        raise KeyError(f"unknown advantage estimator '{name}'; known: {sorted(ADVANTAGES)}")
    fn = ADVANTAGES[name]
    return functools.partial(fn, **params) if params else fn
