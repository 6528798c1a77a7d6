"""Completion format rules for the two modes (EXAONE 4.0 chat format) and the format reward.

A reasoning completion is the text generated after `[|assistant|]\\n<think>\\n`: reasoning, then
`</think>`, then the answer. A non-reasoning completion follows an empty think block and is the
answer itself. Generation stops at `[|endofturn|]`, which may or may not be in the text.
"""
from __future__ import annotations

from dualmode_rl.rewards.types import RewardInput, RewardOutput

END_OF_TURN = "[|endofturn|]"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
MODES = ("reasoning", "non_reasoning")


def split_answer(completion: str, mode: str) -> tuple[str | None, str | None]:
    """Return (answer, None) or (None, error). The answer is what gets graded."""
    text = completion.split(END_OF_TURN, 1)[0]
    if mode == "reasoning":
        if THINK_CLOSE not in text:
            return None, "unclosed think"
        answer = text.rsplit(THINK_CLOSE, 1)[1]
        if THINK_OPEN in answer:
            return None, "think block opened after </think>"
        return answer.strip(), None
    if mode == "non_reasoning":
        if THINK_OPEN in text or THINK_CLOSE in text:
            return None, "think tag in a non-reasoning answer"
        return text.strip(), None
    return None, f"unknown mode {mode!r} (expected one of {MODES})"


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
