"""`arithmetic_steps`: every computation the reasoning shows must be written out and true.

For data whose reasoning writes its computation as lines `a <op> b = c` with integers (the built-in
task suite does). Every line inside the think block that contains `=` is a step: 1.0 when every step
is such a line and right, else 0.0 with the first bad step in extras["wrong_step"] (a wrong step is a
score, not a failure to score: `error` stays None). Answers are not checked: combine it with `auto`
or `math` in `rewards.rewards`. Non-reasoning completions, and reasoning without steps, score 1.0, so
they do not move a group's advantage.

Why it exists: with an outcome reward alone, a sample whose wrong steps land on the right answer
(`10+1=12`, `12*2=22`) is reinforced like a correct one, which on the built-in model teaches wrong
arithmetic. A line with `=` that is not a complete step (`4-2=`) counts as wrong: an earlier version
skipped such lines, and RL on the built-in model learnt to write them to dodge the check.
"""
from __future__ import annotations

import operator
import re

from dualmode_rl.constants import REASONING, THINK_CLOSE
from dualmode_rl.rewards.types import RewardInput, RewardOutput

_LINE = re.compile(r"^\s*(-?\d{1,12})\s*([-+*/])\s*(-?\d{1,12})\s*=\s*(-?\d{1,24})\s*$")
_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.floordiv}


def first_wrong_step(reasoning: str) -> str | None:
    for line in reasoning.splitlines():
        if "=" not in line:
            continue
        match = _LINE.match(line)
        if not match:
            return line.strip()
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
            if item.mode != REASONING or THINK_CLOSE not in item.completion:
                outputs.append(RewardOutput(1.0))
                continue
            wrong = first_wrong_step(item.completion.split(THINK_CLOSE, 1)[0])
            outputs.append(RewardOutput(0.0, extras={"wrong_step": wrong}) if wrong else RewardOutput(1.0))
        return outputs
