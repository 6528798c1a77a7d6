"""Records that cross the rewards package boundary, and the one rule for a reward's score."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

SCORE_RANGE = (0.0, 1.0)


@dataclass
class RewardInput:
    completion: str  # the generated text only (after the generation prompt)
    mode: str  # "reasoning" or "non_reasoning"
    reference: dict[str, Any]  # the dataset row: domain, answer, test, entry_point, ... and `id` (names it in errors)
    completion_ids: list[int] | None = None  # the completion's token ids, when it was generated here
    prompt: list[dict] | None = None  # the chat messages the completion answers (dualmode_rl.prompts)


@dataclass
class RewardOutput:
    score: float
    # The reward could not score this sample: it raised, timed out, returned a bad value, or the row lacks
    # what it needs. The score is then 0.0 and carries no signal (the sample is not a wrong answer).
    error: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # logged, e.g. pass_fraction
    # Why a scored sample got less than full marks (unclosed think, tests failed): a score, not an error.
    reason: str | None = None

    def component(self, name: str | None) -> float:
        """The score of the pool's component `name` (RewardPool keeps each one in extras), else the total."""
        return float(self.extras.get(name, self.score)) if name else self.score


def score_problem(value: Any, score_range: tuple[float, float] = SCORE_RANGE) -> str | None:
    """Why `value` is not a usable score, or None when it is: a real number in `score_range`.

    The one rule for every reward, in training, filtering, evaluation and `dualmode-rl verify` alike.
    The range is [0, 1]: a shaping term or penalty is also scored in [0, 1], and its weight in
    `rewards.rewards` scales it and gives it its sign. A plug-in written for another range (TRL's
    overlong punishment returns values in [-1, 0]) declares it with `range` in its `rewards.rewards`
    entry; its values are then used as they are, and anything outside that range is an error."""
    if value is None:
        return "returned None (cannot score)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"returned {type(value).__name__} {value!r:.60}, not a number"
    if not math.isfinite(value):
        return f"returned {value}, not a finite number"
    low, high = score_range
    if not low <= value <= high:
        hint = "a weight in rewards.rewards scales and signs a reward" if score_range == SCORE_RANGE else "its declared range"
        return f"returned {value}, outside [{low:g}, {high:g}] ({hint})"
    return None
