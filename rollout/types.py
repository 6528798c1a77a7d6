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


@dataclass
class RolloutGroup:
    request_id: str
    mode: str
    prompt_token_ids: list[int]
    samples: list[Sample] = field(default_factory=list)
