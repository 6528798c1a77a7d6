"""Prompt order: a seeded permutation per epoch; its position is part of every checkpoint."""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class PromptSampler:
    size: int
    seed: int
    epoch: int = 0
    position: int = 0

    def _order(self) -> list[int]:
        order = list(range(self.size))
        random.Random(self.seed * 100_003 + self.epoch).shuffle(order)
        return order

    def next(self, count: int) -> list[int]:
        picked: list[int] = []
        while len(picked) < count:
            order = self._order()
            take = order[self.position : self.position + count - len(picked)]
            picked += take
            self.position += len(take)
            if self.position >= self.size:
                self.epoch, self.position = self.epoch + 1, 0
        return picked

    def state(self) -> dict:
        """What a checkpoint keeps; size and seed come from the data and the config."""
        return {"epoch": self.epoch, "position": self.position}
