"""Records that cross the rollout package boundary."""
from __future__ import annotations

from dataclasses import dataclass, field

from dualmode_rl.prompts import Message, prompt_messages

REASONING = "reasoning"
NON_REASONING = "non_reasoning"
MODES = (REASONING, NON_REASONING)


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to sample `n` completions for, in one mode."""

    request_id: str
    prompt: str | list[Message]  # the user message, or the chat so far (dualmode_rl.prompts)
    mode: str  # REASONING or NON_REASONING
    n: int = 8

    @classmethod
    def for_row(cls, row: dict, request_id: str, mode: str, n: int) -> "GenerationRequest":
        """The request for a dataset row (its `prompt` and `system` columns): the one row path."""
        return cls(request_id, prompt_messages(row), mode, n)

    @property
    def messages(self) -> list[Message]:
        """What the chat template renders."""
        return prompt_messages({"prompt": self.prompt})


@dataclass
class Sample:
    token_ids: list[int]  # completion tokens only, as sampled
    logprobs: list[float]  # sampling log-probability of each completion token
    text: str
    finish_reason: str  # "stop" or "length"
    policy_version: int = 0


@dataclass
class RolloutGroup:
    request_id: str
    mode: str
    prompt_token_ids: list[int]
    samples: list[Sample] = field(default_factory=list)
