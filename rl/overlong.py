"""DAPO's overlong handling (Yu et al. 2025, arXiv 2503.14476, section 3.4), one rule per mode.

- "mask" (DAPO's overlong filtering): a truncated sample (finish_reason "length") is left out of the
  loss: its `TrainingBatch.loss_mask` row is 0, so it gets no gradient, adds no tokens to the loss's
  normalisers and does not count as a sequence. Its reward still counts in the advantage statistics
  (the group's baseline, AGAPO's batch stage): DAPO masks the loss of truncated samples only.
- "soft_penalty" (DAPO's soft overlong punishment): R_length(L) is added to the sample's reward before
  the advantages, with L the completion's length in tokens, L_max the mode's `max_tokens` and L_cache
  the buffer: 0 when L <= L_max - L_cache, ((L_max - L_cache) - L) / L_cache inside the buffer, -1
  beyond L_max.
- "none": neither.
"""
from __future__ import annotations

from dataclasses import dataclass

OVERLONG = ("none", "mask", "soft_penalty")
DAPO_BUFFER_SHARE = 0.2  # DAPO's L_cache of 4096 tokens for an L_max of 20480: the default buffer


def soft_overlong_penalty(length: int, max_length: int, buffer: int) -> float:
    """DAPO's R_length: 0 up to L_max - L_cache, then falling linearly to -1 at L_max; -1 beyond."""
    if length > max_length:
        return -1.0
    start = max_length - buffer
    return 0.0 if length <= start else (start - length) / buffer


def default_buffer(max_length: int) -> int:
    return max(1, round(DAPO_BUFFER_SHARE * max_length))


@dataclass(frozen=True)
class OverlongRule:
    """One mode's overlong handling; `buffer` None is DAPO's share of `max_length` (default_buffer)."""

    handling: str
    max_length: int
    buffer: int | None = None

    def __post_init__(self):
        if self.handling not in OVERLONG:
            raise ValueError(f"overlong handling '{self.handling}' is not one of {OVERLONG}")
        if self.max_length < 1:
            raise ValueError(f"overlong max_length must be >= 1, got {self.max_length}")
        if self.buffer is not None and not 0 < self.buffer <= self.max_length:
            raise ValueError(f"overlong buffer must be in [1, max_length={self.max_length}], got {self.buffer}")

    def penalty(self, length: int) -> float:
        if self.handling != "soft_penalty":
            return 0.0
        return soft_overlong_penalty(length, self.max_length, self.buffer or default_buffer(self.max_length))

    def masks(self, truncated: bool) -> bool:
        """Whether a sample is left out of the loss."""
        return self.handling == "mask" and truncated
