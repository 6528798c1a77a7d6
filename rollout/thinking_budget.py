"""The thinking budget: at most N tokens in a think block, then the engine forces `</think>`.

The rule is vLLM's (`SamplingParams.thinking_token_budget`, v1/sample/thinking_budget_state.py) with
single-token markers, and the HF engine applies the same one through `ThinkingBudgetProcessor`:
- think tokens are the tokens after the last `<think>` of prompt + completion that has no `</think>`
  after it; the newline the reasoning-mode generation prompt puts after `<think>` is the first one;
- once the open block holds N think tokens, the next token is `</think>`, whatever the model's
  distribution says (so N = 0 and N = 1 both close the block at once after `<think>\\n`);
- only `</think>` is forced: the model then writes `\\n\\n` and its answer itself. (vLLM's v1 sampler
  also recognises a natural end by the forced token sequence; with `</think>\\n\\n` a model closing with
  other whitespace would go uncounted and get a second `</think>` forced into its answer.)

A forced token was not sampled: `forced_positions` finds them in a finished completion (the rule is
deterministic, so this is exact), the engines record them in `Sample.forced_positions` with a
sampling log-prob of 0 (the engine emitted it with probability 1), and the learner gives them no loss
weight and no importance ratio. `forced_positions` raises if a completion breaks the rule, so a vLLM
upgrade that changes the forcing fails loudly instead of training on forced tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

# The EXAONE 4.0 think markers (rewards/format.py grades with the same strings; packages do not import each other).
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class ThinkMarkers:
    open_id: int
    close_id: int


def think_markers(tokenizer) -> ThinkMarkers | None:
    """The token ids of `<think>` and `</think>`, or None when the tokenizer splits either of them
    (then a thinking budget cannot be applied). EXAONE 4.0's tokenizer and the bootstrap's have both as
    single added tokens."""
    ids = [tokenizer.encode(marker, add_special_tokens=False) for marker in (THINK_OPEN, THINK_CLOSE)]
    if any(len(i) != 1 for i in ids):
        return None
    return ThinkMarkers(ids[0][0], ids[1][0])


def require_markers(markers: ThinkMarkers | None, where: str) -> ThinkMarkers:
    """`markers`, or a clear error naming the tokenizer (`where`, e.g. "at /path/to/model")."""
    if markers is None:
        raise ValueError(f"thinking budget (rollout.reasoning.thinking_budget): the tokenizer {where} does not "
                         f"encode {THINK_OPEN!r} and {THINK_CLOSE!r} as single tokens, which a budget needs")
    return markers


def vllm_reasoning_config(markers: ThinkMarkers | None):
    """The `vllm.LLM(reasoning_config=...)` that lets requests carry `thinking_token_budget`: start and
    forced end strings, no reasoning parser (its natural end marker would be the same `</think>`).
    None when the tokenizer has no single-token markers. Requests without a budget are not tracked."""
    if markers is None:
        return None
    from vllm.config import ReasoningConfig

    return ReasoningConfig(reasoning_start_str=THINK_OPEN, reasoning_end_str=THINK_CLOSE)


class ThinkBlockCounter:
    """Follows one token sequence: whether a think block is open, and how many think tokens it holds."""

    def __init__(self, markers: ThinkMarkers, budget: int | None):
        self.markers, self.budget = markers, budget
        self.open = False
        self.count = 0  # think tokens in the open (or last) block

    def feed(self, token: int) -> None:
        if token == self.markers.open_id:
            self.open, self.count = True, 0
        elif token == self.markers.close_id:
            self.open = False
        elif self.open:
            self.count += 1

    @property
    def must_close(self) -> bool:
        return self.budget is not None and self.open and self.count >= self.budget


def _counter(prompt_ids: list[int], markers: ThinkMarkers, budget: int | None) -> ThinkBlockCounter:
    counter = ThinkBlockCounter(markers, budget)
    for token in prompt_ids:
        counter.feed(token)
    return counter


def forced_positions(prompt_ids: list[int], completion_ids: list[int], markers: ThinkMarkers,
                     budget: int | None) -> list[int]:
    """Completion positions whose token the budget forced; [] without a budget."""
    if budget is None:
        return []
    counter = _counter(prompt_ids, markers, budget)
    forced = []
    for position, token in enumerate(completion_ids):
        if counter.must_close:
            if token != markers.close_id:
                raise RuntimeError(
                    f"thinking budget {budget}: completion position {position} should hold the forced "
                    f"{THINK_CLOSE!r} (id {markers.close_id}) but holds id {token}; the engine's budget rule "
                    "differs from rollout/thinking_budget.py's")
            forced.append(position)
        counter.feed(token)
    return forced


def think_tokens(prompt_ids: list[int], completion_ids: list[int], markers: ThinkMarkers) -> int:
    """Think tokens of the completion's first think block as the budget counts them (the prompt's
    part of an open block included); 0 when the prompt has no open block (non-reasoning mode)."""
    counter = _counter(prompt_ids, markers, None)
    if not counter.open:
        return 0
    for token in completion_ids:
        counter.feed(token)
        if not counter.open:
            break
    return counter.count


def mark_forced(prompt_ids: list[int], completion_ids: list[int], logprobs: list[float],
                markers: ThinkMarkers | None, budget: int | None) -> tuple[list[int], list[float]]:
    """A finished completion's forced positions, and its sampling log-probs with 0.0 there (the engine
    emitted those tokens with probability 1)."""
    if budget is None:
        return [], logprobs
    forced = forced_positions(prompt_ids, completion_ids, require_markers(markers, "in use"), budget)
    logprobs = list(logprobs)
    for position in forced:
        logprobs[position] = 0.0
    return forced, logprobs


class ThinkingBudgetProcessor(LogitsProcessor):
    """A transformers logits processor that forces `</think>` by the rule above, one counter per row.

    `generate` calls it once per new token with the whole sequence so far (left padding holds no
    markers): the first call reads the prompts, later ones the last token of each row."""

    def __init__(self, markers: ThinkMarkers, budget: int):
        self.markers, self.budget = markers, budget
        self.counters: list[ThinkBlockCounter] | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.counters is None:
            self.counters = [_counter(row, self.markers, self.budget) for row in input_ids.tolist()]
        else:
            for counter, token in zip(self.counters, input_ids[:, -1].tolist()):
                counter.feed(token)
        rows = [i for i, counter in enumerate(self.counters) if counter.must_close]
        if rows:
            scores = scores.clone()
            scores[rows] = float("-inf")
            scores[rows, self.markers.close_id] = 0.0
        return scores
