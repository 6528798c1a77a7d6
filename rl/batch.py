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
    # Per-token loss weight, 0.0 on tokens the engine forced rather than sampled (a thinking budget's
    # `</think>`): they get no gradient and no importance ratio, and do not count as tokens. None: all 1.0.
    loss_mask: list[list[float]] | None = None

    def __len__(self) -> int:
        return len(self.completion_ids)

    def trained_tokens(self) -> list[float]:
        """Per sequence, the completion tokens that carry loss weight."""
        if self.loss_mask is None:
            return [float(len(c)) for c in self.completion_ids]
        return [float(sum(weights)) for weights in self.loss_mask]
