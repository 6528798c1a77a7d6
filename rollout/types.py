"""Records that cross the rollout package boundary."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from dualmode_rl.constants import MODES, NON_REASONING, REASONING  # noqa: F401 - the modes, as rollout's records name them
from dualmode_rl.prompts import Message, prompt_messages

if TYPE_CHECKING:
    import torch

    from .modes import SamplingConfig


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


@runtime_checkable
class Engine(Protocol):
    """One in-process generation engine, as the worker, the filter and eval drive it. The engines are
    named in rollout/registry.py (VllmEngine, HfEngine). vLLM's sleep mode and weight-transfer API
    are VllmEngine's own; the config allows colocation and streamed weights with the vLLM engine only."""

    model_path: str
    max_model_len: int
    sampling: SamplingConfig

    @property
    def policy_version(self) -> int: ...

    def generate(self, requests: list[GenerationRequest], seed: int | None = None,
                 sampling: SamplingConfig | None = None) -> list[RolloutGroup]:
        """`request.n` samples per request, groups in request order; `seed` resets the sampler first,
        `sampling` replaces the engine's settings for this call."""

    def generate_greedy(self, requests: list[GenerationRequest]) -> list[RolloutGroup]:
        """One temperature-0 completion per request."""

    def prompt_logprobs(self, token_ids: list[int]) -> list[float]:
        """log p(token_t | tokens_<t) for t = 1..len-1 under the current weights."""

    def update_weights(self, weights: dict[str, torch.Tensor], version: int) -> None: ...

    def load_weights_file(self, path: str, version: int) -> None: ...

    def shutdown(self) -> None: ...
