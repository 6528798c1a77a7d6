"""Records that cross the rewards package boundary."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RewardInput:
    completion: str  # the generated text only (after the generation prompt)
    mode: str  # "reasoning" or "non_reasoning"
    reference: dict[str, Any]  # the dataset row: domain, answer, test, entry_point, ...


@dataclass
class RewardOutput:
    score: float
    error: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # logged, e.g. pass_fraction

    def component(self, name: str | None) -> float:
        """The score of the pool's component `name` (RewardPool keeps each one in extras), else the total."""
        return float(self.extras.get(name, self.score)) if name else self.score
