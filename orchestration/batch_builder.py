"""Turns scored rollout groups into the learner's TrainingBatch (advantages over the whole batch).

A sample whose reward failed (raised or timed out: `RewardOutput.error`) is not a wrong answer: it
is left out of the advantage statistics and of the batch; a group with no scored sample is dropped.
"""
from __future__ import annotations

import torch

from dualmode_rl.rewards.types import RewardInput, RewardOutput
from dualmode_rl.rl.batch import TrainingBatch
from dualmode_rl.rollout.types import RolloutGroup

from .metrics import is_correct


def reward_inputs(groups: list[RolloutGroup], rows: list[dict]) -> list[RewardInput]:
    return [RewardInput(s.text, g.mode, row) for g, row in zip(groups, rows) for s in g.samples]


def build_batch(groups: list[RolloutGroup], outputs: list[RewardOutput], advantage_fn,
                accuracy_reward: str | None = None,
                ref_logprobs: list[list[float]] | None = None) -> tuple[TrainingBatch, torch.Tensor]:
    """Rewards [B, G] -> advantages [B, G] -> one sequence per scored sample. `accuracy_reward` names
    the reward component whose score >= 1 is a correct answer (agapo_neg's all-incorrect groups);
    `ref_logprobs`, one per sample in `outputs`' order, are kept for the same samples."""
    sizes = {len(g.samples) for g in groups}
    if len(sizes) != 1:
        raise ValueError(f"every group needs the same number of samples, got sizes {sorted(sizes)}")
    shape = (len(groups), -1)
    rewards = torch.tensor([o.score for o in outputs], dtype=torch.float32).view(shape)
    valid = torch.tensor([o.error is None for o in outputs]).view(shape)
    if not valid.any():
        raise RuntimeError(f"every sample's reward failed, for example: {outputs[0].error}")
    kept_groups = valid.any(dim=1)  # a group whose rewards all failed is dropped
    correct = torch.tensor([is_correct(o, accuracy_reward) for o in outputs]).view(shape)
    advantages = advantage_fn(rewards[kept_groups], valid=valid[kept_groups], correct=correct[kept_groups])
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
        loss_mask=[flat[k][3].sampled_mask() for k in kept],  # forced tokens (thinking budget) weigh 0
    )
    return batch, rewards
