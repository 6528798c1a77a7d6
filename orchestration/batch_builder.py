"""Turns scored rollout groups into the learner's TrainingBatch (advantages over the whole batch)."""
from __future__ import annotations

import torch

from dualmode_rl.filtering.rows import reward_inputs as row_reward_inputs
from dualmode_rl.rewards.types import RewardInput, RewardOutput
from dualmode_rl.rl.batch import TrainingBatch
from dualmode_rl.rollout.types import RolloutGroup


def reward_inputs(groups: list[RolloutGroup], rows: list[dict]) -> list[RewardInput]:
    return [item for g, row in zip(groups, rows) for item in row_reward_inputs(row, g.samples, g.mode)]


def build_batch(groups: list[RolloutGroup], outputs: list[RewardOutput], advantage_fn) -> tuple[TrainingBatch, torch.Tensor]:
    """Rewards [B, G] -> advantages [B, G] -> one sequence per sample."""
    sizes = {len(g.samples) for g in groups}
    if len(sizes) != 1:
        raise ValueError(f"every group needs the same number of samples, got sizes {sorted(sizes)}")
    rewards = torch.tensor([o.score for o in outputs], dtype=torch.float32).view(len(groups), -1)
    advantages = advantage_fn(rewards)
    samples = [(i, g, s) for i, g in enumerate(groups) for s in g.samples]
    batch = TrainingBatch(
        prompt_ids=[g.prompt_token_ids for _, g, _ in samples],
        completion_ids=[s.token_ids for _, _, s in samples],
        advantages=advantages.flatten().tolist(),
        group_ids=[i for i, _, _ in samples],
        modes=[g.mode for _, g, _ in samples],
        rollout_logprobs=[s.logprobs for _, _, s in samples],
    )
    return batch, rewards
