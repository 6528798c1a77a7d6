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


def score_problem(value: Any) -> str | None:
    """Why `value` is not a usable score, or None when it is: a real number in [0, 1].

    The one rule for every reward, in training, filtering, evaluation and `dualmode-rl verify` alike.
    A shaping term or penalty is also scored in [0, 1]; its weight in `rewards.rewards` scales it and
    gives it its sign."""
    if value is None:
        return "returned None (cannot score)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"returned {type(value).__name__} {value!r:.60}, not a number"
    if not math.isfinite(value):
        return f"returned {value}, not a finite number"
    low, high = SCORE_RANGE
    if not low <= value <= high:
        return f"returned {value}, outside [{low:g}, {high:g}] (a weight in rewards.rewards scales and signs a reward)"
    return None
