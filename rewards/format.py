"""Completion format rules for the two modes (EXAONE 4.0 chat format) and the format reward.

A reasoning completion is the text generated after `[|assistant|]\\n<think>\\n`: reasoning, then
`</think>`, then the answer. A non-reasoning completion follows an empty think block and is the
answer itself. Generation stops at `[|endofturn|]`, which may or may not be in the text.

The chat tokens below are the project's one definition of them (the bootstrap chat template uses them).
"""
from __future__ import annotations

from dataclasses import dataclass

from dualmode_rl.rewards.types import RewardInput, RewardOutput

END_OF_TURN = "[|endofturn|]"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
MODES = ("reasoning", "non_reasoning")


@dataclass(frozen=True)
class AnswerSegment:
    """The part of a completion that answers: after the last `</think>` in reasoning mode, the whole turn
    in non-reasoning mode. `text` is None for a reasoning completion that never closes its think block."""

    text: str | None
    has_think_tag: bool = False  # a `<think>` or `</think>` inside the answer segment


def answer_segment(completion: str, mode: str) -> AnswerSegment:
    """The completion's answer segment (up to `[|endofturn|]`); ValueError for an unknown mode."""
    text = completion.split(END_OF_TURN, 1)[0]
    if mode == "reasoning":
        if THINK_CLOSE not in text:
            return AnswerSegment(None)
        text = text.rsplit(THINK_CLOSE, 1)[1]
    elif mode != "non_reasoning":
        raise ValueError(f"unknown mode {mode!r} (expected one of {MODES})")
    return AnswerSegment(text, THINK_OPEN in text or THINK_CLOSE in text)


def split_answer(completion: str, mode: str) -> tuple[str | None, str | None]:
    """Return (answer, None) or (None, error). The answer is what gets graded."""
    try:
        segment = answer_segment(completion, mode)
    except ValueError as exc:
        return None, str(exc)
    if segment.text is None:
        return None, "unclosed think"
    if segment.has_think_tag:
        if mode == "reasoning":
            return None, "think block opened after </think>"
        return None, "think tag in a non-reasoning answer"
    return segment.text.strip(), None


class FormatReward:
    """1 when the completion follows its mode's format, else 0 with the reason (a score, not an error)."""

    name = "format"

    def __call__(self, inputs: list[RewardInput]) -> list[RewardOutput]:
        outputs = []
        for item in inputs:
            answer, error = split_answer(item.completion, item.mode)
            if error is None and not answer:
                error = "empty answer"
            outputs.append(RewardOutput(score=0.0 if error else 1.0, reason=error))
        return outputs
