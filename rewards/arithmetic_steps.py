"""`arithmetic_steps`: every arithmetic line the reasoning shows must be true.

For data whose reasoning writes its computation as lines `a <op> b = c` with integers (the built-in
task suite does): 1.0 when every such line inside the think block is right, else 0.0 with the first
wrong line as the error. Answers are not checked: combine it with `auto` or `math` in
`rewards.rewards`. Non-reasoning completions, and reasoning without such lines, score 1.0, so they
do not move a group's advantage.

Why it exists: with an outcome reward alone, a sample whose wrong steps land on the right answer
(`10+1=12`, `12*2=22`) is reinforced like a correct one, which on the built-in model teaches wrong
arithmetic. The best RL result on the built-in model so far used it (README, "What the demo shows").
"""
from __future__ import annotations

import operator
import re

from rewards.format import THINK_CLOSE
from rewards.types import RewardInput, RewardOutput

_LINE = re.compile(r"^\s*(-?\d{1,12})\s*([-+*/])\s*(-?\d{1,12})\s*=\s*(-?\d{1,24})\s*$")
_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}


def first_wrong_step(reasoning: str) -> str | None:
    for line in reasoning.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        a, op, b, shown = int(match[1]), match[2], int(match[3]), int(match[4])
        if op == "/" and (b == 0 or a % b):
            return line.strip()
        if _OPS[op](a, b) != shown:
            return line.strip()
    return None


class ArithmeticStepsReward:
    name = "arithmetic_steps"

    def __call__(self, inputs: list[RewardInput]) -> list[RewardOutput]:
        outputs = []
        for item in inputs:
            if item.mode != "reasoning" or THINK_CLOSE not in item.completion:
                outputs.append(RewardOutput(1.0))
                continue
            wrong = first_wrong_step(item.completion.split(THINK_CLOSE, 1)[0])
            outputs.append(RewardOutput(0.0, f"wrong step: {wrong}") if wrong else RewardOutput(1.0))
        return outputs
