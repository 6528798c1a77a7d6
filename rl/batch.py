"""The training batch the learner consumes: K = B*G scored sequences."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainingBatch:
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    advantages: list[float]  # one per sequence, already computed over the batch
    group_ids: list[int]  # which prompt each sequence belongs to
    modes: list[str]
    rollout_logprobs: list[list[float]] | None = None  # sampling logprobs, for off-policy steps
    ref_logprobs: list[list[float]] | None = None  # the reference's, when computed ahead (Learner.reference_logprobs)

    def __len__(self) -> int:
        return len(self.completion_ids)
