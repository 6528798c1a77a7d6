"""Records that cross the rollout package boundary."""
from __future__ import annotations

from dataclasses import dataclass, field

REASONING = "reasoning"
NON_REASONING = "non_reasoning"
MODES = (REASONING, NON_REASONING)


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to sample `n` completions for, in one mode."""

    request_id: str
    prompt: str  # the user message; rendered through the tokenizer's chat template
    mode: str  # REASONING or NON_REASONING
    n: int = 8
    system: str | None = None


@dataclass
class Sample:
    token_ids: list[int]  # completion tokens only, as sampled
    # log-probability of each completion token under the distribution it was sampled from: the model's
    # softmax(logits / T), cut by top-k and top-p and renormalised (the engines' "processed_logprobs")
    logprobs: list[float]
    text: str
    finish_reason: str  # "stop" or "length"
    policy_version: int = 0
    # Positions the engine forced rather than sampled (the thinking budget's `</think>`, see
    # rollout/thinking_budget.py); their logprobs are 0.0 and they get no loss weight or importance ratio.
    forced_positions: list[int] = field(default_factory=list)

    @property
    def budget_hit(self) -> bool:
        """The thinking budget closed this sample's think block."""
        return bool(self.forced_positions)

    def sampled_mask(self) -> list[float]:
        """1.0 on each sampled token, 0.0 on each forced one."""
        mask = [1.0] * len(self.token_ids)
        for position in self.forced_positions:
            mask[position] = 0.0
        return mask


@dataclass
class RolloutGroup:
    request_id: str
    mode: str
    prompt_token_ids: list[int]
    samples: list[Sample] = field(default_factory=list)
