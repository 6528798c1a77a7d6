"""Mode fidelity: does a completion keep to its mode? Three flags, and the `mode_fidelity` reward.

On the answer segment of rewards.format (after the last `</think>` in reasoning mode, the whole turn
in non-reasoning mode, up to `[|endofturn|]`):

- `think_leak`: the answer segment holds a `<think>` or `</think>`, or goes on past its final answer.
  In non-reasoning mode this is reasoning leaking into a mode that must not reason; in reasoning mode,
  reasoning resumed after `</think>`.
- `think_unclosed` (reasoning mode only): no `</think>`, so there is no answer segment.
- `empty_answer`: the answer segment is empty or whitespace only.

"Goes on past its final answer", conservatively: the final answer ends at the closing brace of the last
`\\boxed{}` or after the last closing fence of a ``` code block, whichever comes later. The rest of that
line may hold anything (`$.`, ` dollars.`); a later line holding a letter or digit is a leak. An answer
segment with neither a `\\boxed{}` nor a fenced block has no recognisable end and is never flagged so.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields

from dualmode_rl.rewards.code import last_fence_end
from dualmode_rl.rewards.format import answer_segment
from dualmode_rl.rewards.math import last_boxed_span
from dualmode_rl.rewards.types import RewardInput, RewardOutput

FLAGS_BY_MODE = {
    "reasoning": ("think_leak", "think_unclosed", "empty_answer"),
    "non_reasoning": ("think_leak", "empty_answer"),
}
_WORD = re.compile(r"\w")


@dataclass(frozen=True)
class ModeFlags:
    think_leak: bool = False
    think_unclosed: bool = False
    empty_answer: bool = False

    def raised(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name)]


def final_answer_end(answer: str) -> int | None:
    """Index just past the final answer (last `\\boxed{}`'s closing brace or last code fence), or None."""
    boxed, fence_end = last_boxed_span(answer), last_fence_end(answer)
    ends = ([] if boxed is None else [boxed[1] + 1]) + ([] if fence_end is None else [fence_end])
    return max(ends, default=None)


def goes_on_past_answer(answer: str) -> bool:
    """A line after the final answer's line holds a letter or digit (see the module doc)."""
    end = final_answer_end(answer)
    if end is None:
        return False
    _, newline, later_lines = answer[end:].partition("\n")
    return bool(newline) and _WORD.search(later_lines) is not None


def mode_flags(completion: str, mode: str) -> ModeFlags:
    """The flags of one completion in `mode`; ValueError for an unknown mode."""
    segment = answer_segment(completion, mode)
    if segment.text is None:
        return ModeFlags(think_unclosed=True)
    return ModeFlags(think_leak=segment.has_think_tag or goes_on_past_answer(segment.text),
                     empty_answer=not segment.text.strip())


class ModeFidelityReward:
    """1 when no mode-fidelity flag is raised for the sample's mode, else 0 with the flags in extras.
    A raised flag is a score, not a failure to score: `error` stays None."""

    name = "mode_fidelity"

    def __call__(self, inputs: list[RewardInput]) -> list[RewardOutput]:
        outputs = []
        for item in inputs:
            raised = mode_flags(item.completion, item.mode).raised()
            outputs.append(RewardOutput(0.0, extras={"flags": ",".join(raised)}) if raised else RewardOutput(1.0))
        return outputs
