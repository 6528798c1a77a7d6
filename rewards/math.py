"""Math reward: strict final-\\boxed{} extraction, checked against the gold answer with Math-Verify
in a killable worker process (rewards.math_worker).

Gold forms: GSM8K (`... #### 18`), MATH (`\\boxed{...}` inside a solution, or a bare answer).
"""
from __future__ import annotations

import re

from dualmode_rl.rewards.format import split_answer
from dualmode_rl.rewards.math_worker import MathVerifyPool
from dualmode_rl.rewards.types import RewardInput, RewardOutput
from dualmode_rl.rewards.worker_owner import WorkerOwner

MAX_ANSWER_CHARS = 500
MAX_EXPONENT = 10_000
_POWER = re.compile(r"(?:\^|\*\*)\s*\{?\s*\(?\s*(\d+)")
# a power inside an exponent: 2^{3^{4}}, 10^10^10, 2**3**4
_NESTED_POWER = re.compile(r"\^\{[^{}]*(?:\^|\*\*)|(?:\^|\*\*)\(?[\d.]+\)?(?:\^|\*\*)")
_FACTORIAL = re.compile(r"(\d+)\s*!")
_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed_span(text: str) -> tuple[int, int] | None:
    """(start, end) of the last \\boxed{...}'s content (balanced braces; `end` is its closing brace), or None."""
    starts = [m.end() for m in _BOX.finditer(text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return start, i
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (balanced braces), or None."""
    span = last_boxed_span(text)
    return None if span is None else text[span[0]:span[1]].strip()


def gold_answer(answer: str) -> str:
    """The gold answer as a bare expression from a GSM8K, MATH solution or bare answer string."""
    if "####" in answer:
        return answer.rsplit("####", 1)[1].strip().replace(",", "")
    boxed = last_boxed(answer)
    return boxed if boxed is not None else answer.strip()


def refusal(expression: str) -> str | None:
    """Why an expression is too dangerous to hand to sympy, or None."""
    if len(expression) > MAX_ANSWER_CHARS:
        return f"answer longer than {MAX_ANSWER_CHARS} characters"
    compact = expression.replace(" ", "")
    if any(int(e) > MAX_EXPONENT for e in _POWER.findall(compact)):
        return "exponent too large"
    if _NESTED_POWER.search(compact):
        return "nested exponent"
    if any(int(n) > 1000 for n in _FACTORIAL.findall(compact)):
        return "factorial too large"
    return None


class MathReward(WorkerOwner[MathVerifyPool]):
    name = "math"

    def __init__(self, num_procs: int = 1, timeout_s: float = 5.0, pool: MathVerifyPool | None = None):
        super().__init__(MathVerifyPool, dict(num_procs=num_procs, timeout_s=timeout_s), pool)

    def score_one(self, item: RewardInput, verdicts: dict | None = None) -> RewardOutput:
        """Score 0 with a `reason` for a wrong or unusable answer; `error` only when the row is at fault.
        `verdicts` caches Math-Verify's answer per (prediction, gold) across a batch."""
        if "answer" not in item.reference:
            return RewardOutput(0.0, "math row has no `answer`")
        gold = gold_answer(str(item.reference["answer"]))
        if refusal(gold):
            return RewardOutput(0.0, f"the row's answer is refused: {refusal(gold)}")
        answer, reason = split_answer(item.completion, item.mode)
        if reason:
            return RewardOutput(0.0, reason=reason)
        pred = last_boxed(answer)
        if pred is None:
            return RewardOutput(0.0, reason="no \\boxed{} answer")
        if refusal(pred):
            return RewardOutput(0.0, reason=f"refused: {refusal(pred)}")
        verdicts = {} if verdicts is None else verdicts
        if (pred, gold) not in verdicts:
            verdicts[pred, gold] = self.workers.equal(f"\\boxed{{{pred}}}", f"\\boxed{{{gold}}}",
                                                      pred_extraction=["latex_boxed"], gold_extraction=["latex_boxed", "expr"])
        equal, reason = verdicts[pred, gold]
        return RewardOutput(1.0 if equal else 0.0, extras={"extracted": pred[:100]}, reason=reason)

    def __call__(self, inputs: list[RewardInput]) -> list[RewardOutput]:
        """A batch: each distinct (prediction, gold) pair is verified once (the G samples of a prompt often
        give the same answer; Math-Verify is deterministic)."""
        verdicts: dict = {}
        return [self.score_one(item, verdicts) for item in inputs]
