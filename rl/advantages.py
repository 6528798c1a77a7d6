"""Advantage estimators: `[B, G]` rewards (B prompts, G samples each) -> `[B, G]` advantages.

Every estimator takes `(rewards, valid=None, correct=None, modes=None, normalize="batch", **params)`:
- `valid` [B, G] bool marks the samples that have a reward; the others (a reward that raised or
  timed out) take no part in any statistic and get advantage 0. Groups then have G_b <= G samples:
  group means and leave-one-out baselines are over a group's valid samples, AGAPO's global stage
  over the batch's valid samples. A group with one valid sample has no baseline: advantage 0 (GRPO,
  Dr. GRPO, RLOO, AGAPO's group stage). With every sample valid this is the printed arithmetic.
- `correct` [B, G] bool: the accuracy reward's verdict, read by `agapo_neg` only.
- `modes`: each group's mode (B strings), and `normalize`: "batch" (AGAPO's global stage over the
  whole batch, as printed) or "mode" (over each mode's samples apart, so long reasoning rollouts do
  not set the scale of non-reasoning ones). Only AGAPO's estimators have a batch-wide stage; the
  others take both and ignore them.

Registry: `ADVANTAGES[name]` and `get_advantage(name, **params)`, which binds keyword
parameters (for example `get_advantage("agapo_neg", all_incorrect_advantage=-0.2)`).

Standard deviations are the unbiased (n - 1) estimate, as `torch.std` and TRL use.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch

AdvantageFn = Callable[..., torch.Tensor]
CORRECT_THRESHOLD = 1.0 - 1e-9  # a reward of 1 is correct, when no accuracy verdict is given
NORMALIZE = ("batch", "mode")


def _check_rewards(rewards: torch.Tensor, valid: torch.Tensor | None, name: str, min_group: int = 1,
                   modes: list[str] | None = None, normalize: str = "batch") -> tuple[torch.Tensor, torch.Tensor]:
    """(float rewards with 0 where invalid, valid as bool)."""
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 2:
        raise ValueError(f"advantage '{name}': rewards must be a [B, G] tensor, got {getattr(rewards, 'shape', type(rewards))}")
    if rewards.shape[1] < min_group:
        raise ValueError(f"advantage '{name}' needs at least {min_group} samples per prompt, got G={rewards.shape[1]}")
    if normalize not in NORMALIZE:
        raise ValueError(f"advantage '{name}': normalize must be one of {NORMALIZE}, got {normalize!r}")
    if normalize == "mode" and (modes is None or len(modes) != len(rewards)):
        raise ValueError(f"advantage '{name}': normalize 'mode' needs one mode per group, got "
                         f"{None if modes is None else len(modes)} for {len(rewards)} groups")
    valid = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid.bool()
    if valid.shape != rewards.shape:
        raise ValueError(f"advantage '{name}': valid has shape {tuple(valid.shape)}, rewards {tuple(rewards.shape)}")
    rewards = rewards if rewards.is_floating_point() else rewards.float()
    if not torch.isfinite(rewards[valid]).all():
        raise ValueError(f"advantage '{name}': rewards contain NaN or inf")
    return torch.where(valid, rewards, torch.zeros_like(rewards)), valid


def _group_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return (values * valid).sum(dim=1, keepdim=True) / valid.sum(dim=1, keepdim=True).clamp(min=1)


def leave_one_out(rewards: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """A_loo_i = r_i - mean_{j != i, same group, valid} r_j; 0 where invalid or alone in its group."""
    valid = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid
    count = valid.sum(dim=1, keepdim=True)
    others_mean = ((rewards * valid).sum(dim=1, keepdim=True) - rewards) / (count - 1).clamp(min=1)
    return torch.where(valid & (count > 1), rewards - others_mean, torch.zeros_like(rewards))


def _standardise(values: torch.Tensor, valid: torch.Tensor, eps: float) -> torch.Tensor:
    flat = values[valid]
    std = flat.std() if flat.numel() > 1 else flat.new_zeros(())
    mean = flat.mean() if flat.numel() else flat.new_zeros(())
    return torch.where(valid, (values - mean) / (std + eps), torch.zeros_like(values))


def _global_standardise(values: torch.Tensor, valid: torch.Tensor, eps: float, modes: list[str] | None,
                        normalize: str) -> torch.Tensor:
    """AGAPO's global stage: over the batch's valid samples, or (normalize "mode") each mode's apart."""
    if normalize == "batch":
        return _standardise(values, valid, eps)
    out = torch.zeros_like(values)
    for mode in sorted(set(modes)):
        rows = torch.tensor([m == mode for m in modes], device=values.device)[:, None]
        out = torch.where(rows, _standardise(values, valid & rows, eps), out)
    return out


def agapo(rewards: torch.Tensor, valid: torch.Tensor | None = None, correct: torch.Tensor | None = None,
          modes: list[str] | None = None, normalize: str = "batch", eps: float = 1e-6) -> torch.Tensor:
    """AGAPO as printed in the EXAONE 4.0 report.

    Group stage: leave-one-out. Global stage over all K = B*G samples:
    A_i = (A_loo_i - mean_K(A_loo)) / (std_K(A_loo) + eps); with normalize "mode", mean and std are
    those of the samples of A_i's mode.
    A group whose samples share one reward (all right or all wrong) gets exactly zero.
    """
    rewards, valid = _check_rewards(rewards, valid, "agapo", 2, modes, normalize)
    return _global_standardise(leave_one_out(rewards, valid), valid, eps, modes, normalize)


def agapo_neg(
    rewards: torch.Tensor,
    valid: torch.Tensor | None = None,
    correct: torch.Tensor | None = None,
    modes: list[str] | None = None,
    normalize: str = "batch",
    all_incorrect_advantage: float = -0.1,
    eps: float = 1e-6,
) -> torch.Tensor:
    """AGAPO with the report's stated intent: all-incorrect groups get a small negative signal.

    Choice made here (the report gives no formula): in the group stage, every sample of a group
    none of whose valid samples is `correct` gets `all_incorrect_advantage` (in reward units)
    instead of its leave-one-out value (which would be 0 when they share one reward). `correct` is
    the accuracy reward's verdict, so shaping terms added to the reward do not hide an all-wrong
    group; without it, a reward >= 1 is correct. The global stage is unchanged, so these samples
    stay negative after standardisation (unless every group is all-incorrect), while mixed groups
    keep their leave-one-out ordering, shifted and rescaled slightly by the new batch mean and std.
    All-correct groups still get 0 before the global stage. `normalize` as in `agapo`.
    """
    rewards, valid = _check_rewards(rewards, valid, "agapo_neg", 2, modes, normalize)
    if all_incorrect_advantage > 0:
        raise ValueError(f"advantage 'agapo_neg': all_incorrect_advantage must be <= 0, got {all_incorrect_advantage}")
    correct = rewards >= CORRECT_THRESHOLD if correct is None else correct.bool()
    group_stage = leave_one_out(rewards, valid)
    all_incorrect = ~(correct & valid).any(dim=1, keepdim=True)
    group_stage = torch.where(all_incorrect, torch.full_like(group_stage, all_incorrect_advantage), group_stage)
    return _global_standardise(group_stage, valid, eps, modes, normalize)


def grpo(rewards: torch.Tensor, valid: torch.Tensor | None = None, correct: torch.Tensor | None = None,
         modes: list[str] | None = None, normalize: str = "batch", eps: float = 1e-4) -> torch.Tensor:
    """GRPO: (r - group mean) / (group std + eps); eps = 1e-4 as in TRL. Every statistic is within
    a group, so `modes` and `normalize` change nothing (they are checked, then ignored)."""
    rewards, valid = _check_rewards(rewards, valid, "grpo", 2, modes, normalize)
    mean = _group_mean(rewards, valid)
    count = valid.sum(dim=1, keepdim=True)
    std = (((rewards - mean) ** 2 * valid).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)).sqrt()
    return torch.where(valid & (count > 1), (rewards - mean) / (std + eps), torch.zeros_like(rewards))


def dr_grpo(rewards: torch.Tensor, valid: torch.Tensor | None = None, correct: torch.Tensor | None = None,
            modes: list[str] | None = None, normalize: str = "batch") -> torch.Tensor:
    """Dr. GRPO: r - group mean, no std scaling. Within groups only: `modes` and `normalize` are ignored."""
    rewards, valid = _check_rewards(rewards, valid, "dr_grpo", 1, modes, normalize)
    return torch.where(valid, rewards - _group_mean(rewards, valid), torch.zeros_like(rewards))


def rloo(rewards: torch.Tensor, valid: torch.Tensor | None = None, correct: torch.Tensor | None = None,
         modes: list[str] | None = None, normalize: str = "batch") -> torch.Tensor:
    """RLOO: r_i - mean of the other samples of the group, no normalisation. Within groups only:
    `modes` and `normalize` are ignored."""
    rewards, valid = _check_rewards(rewards, valid, "rloo", 2, modes, normalize)
    return leave_one_out(rewards, valid)


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
