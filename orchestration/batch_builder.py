"""Turns scored rollout groups into the learner's TrainingBatch (advantages over the whole batch).

A sample whose reward failed (raised or timed out: `RewardOutput.error`) is not a wrong answer: it
is left out of the advantage statistics and of the batch; a group with no scored sample is dropped.
Overlong rules (rl/overlong.py), per mode, add DAPO's soft penalty to the rewards before the
advantages, or give truncated samples loss weight 0.
"""
from __future__ import annotations

from statistics import mean

import torch

from dualmode_rl.rewards.types import RewardInput, RewardOutput
from dualmode_rl.rl.batch import TrainingBatch
from dualmode_rl.rl.overlong import OverlongRule
from dualmode_rl.rollout.types import RolloutGroup

from .metrics import is_correct


def reward_inputs(groups: list[RolloutGroup], rows: list[dict]) -> list[RewardInput]:
    return [RewardInput(s.text, g.mode, row) for g, row in zip(groups, rows) for s in g.samples]


def overlong_penalties(groups: list[RolloutGroup], overlong: dict[str, OverlongRule] | None) -> list[float]:
    """Each sample's soft overlong penalty (0 where its mode has none), in build_batch's order."""
    rules = overlong or {}
    return [rules[g.mode].penalty(len(s.token_ids)) if g.mode in rules else 0.0 for g in groups for s in g.samples]


def overlong_metrics(groups: list[RolloutGroup], overlong: dict[str, OverlongRule] | None) -> dict[str, float]:
    """`overlong/penalty/<mode>`: the mean soft penalty of each mode that has one."""
    penalised = {mode for mode, rule in (overlong or {}).items() if rule.handling == "soft_penalty"}
    pairs = list(zip([g.mode for g in groups for _ in g.samples], overlong_penalties(groups, overlong)))
    return {f"overlong/penalty/{mode}": mean(p for m, p in pairs if m == mode)
            for mode in sorted(penalised & {m for m, _ in pairs})}


def _loss_mask(group: RolloutGroup, sample, overlong: dict[str, OverlongRule] | None) -> list[float]:
    """Forced tokens (thinking budget) weigh 0; so does a whole sample its mode's overlong rule masks."""
    rule = (overlong or {}).get(group.mode)
    if rule is not None and rule.masks(sample.finish_reason == "length"):
        return [0.0] * len(sample.token_ids)
    return sample.sampled_mask()


def build_batch(groups: list[RolloutGroup], outputs: list[RewardOutput], advantage_fn,
                accuracy_reward: str | None = None, ref_logprobs: list[list[float]] | None = None,
                overlong: dict[str, OverlongRule] | None = None) -> tuple[TrainingBatch, torch.Tensor]:
    """Rewards [B, G] (plus overlong penalties) -> advantages [B, G] -> one sequence per scored sample.
    `accuracy_reward` names the reward component whose score >= 1 is a correct answer (agapo_neg's
    all-incorrect groups); `ref_logprobs`, one per sample in `outputs`' order, are kept for the same
    samples; `overlong` maps a mode to its rule. The advantage function gets each group's mode."""
    sizes = {len(g.samples) for g in groups}
    if len(sizes) != 1:
        raise ValueError(f"every group needs the same number of samples, got sizes {sorted(sizes)}")
    shape = (len(groups), -1)
    rewards = torch.tensor([o.score + p for o, p in zip(outputs, overlong_penalties(groups, overlong))],
                           dtype=torch.float32).view(shape)
    valid = torch.tensor([o.error is None for o in outputs]).view(shape)
    if not valid.any():
        raise RuntimeError(f"every sample's reward failed, for example: {outputs[0].error}")
    kept_groups = valid.any(dim=1)  # a group whose rewards all failed is dropped
    correct = torch.tensor([is_correct(o, accuracy_reward) for o in outputs]).view(shape)
    modes = [g.mode for g, kept in zip(groups, kept_groups.tolist()) if kept]
    advantages = advantage_fn(rewards[kept_groups], valid=valid[kept_groups], correct=correct[kept_groups],
                              modes=modes)
    by_group = dict(zip(kept_groups.nonzero().flatten().tolist(), advantages.tolist()))
    flat = [(i, j, g, s) for i, g in enumerate(groups) for j, s in enumerate(g.samples)]
    kept = [k for k, (i, j, _, _) in enumerate(flat) if valid[i, j]]
    batch = TrainingBatch(
        prompt_ids=[flat[k][2].prompt_token_ids for k in kept],
        completion_ids=[flat[k][3].token_ids for k in kept],
        advantages=[by_group[flat[k][0]][flat[k][1]] for k in kept],
        group_ids=[flat[k][0] for k in kept],
        modes=[flat[k][2].mode for k in kept],
        rollout_logprobs=[flat[k][3].logprobs for k in kept],
        ref_logprobs=None if ref_logprobs is None else [ref_logprobs[k] for k in kept],
        loss_mask=[_loss_mask(flat[k][2], flat[k][3], overlong) for k in kept],
    )
    return batch, rewards
