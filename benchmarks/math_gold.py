"""Gold answers of GSM8K test and MATH-500, written boxed into a completion, must verify; another
row's (different) answer must not. Usage: python benchmarks/math_gold.py [--limit N] [--seed S]"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dualmode_rl.rewards.math import MathReward, gold_answer  # noqa: E402
from dualmode_rl.rewards.pool import RewardPool  # noqa: E402
from dualmode_rl.rewards.types import RewardInput  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def load_gold(limit: int | None = None, seed: int = 0) -> dict[str, list[str]]:
    gsm = [json.loads(line)["answer"] for line in open(DATA / "gsm8k" / "test.jsonl")]
    m500 = [json.loads(line)["answer"] for line in open(DATA / "math500" / "test.jsonl")]
    if limit:
        rng = random.Random(seed)
        gsm, m500 = rng.sample(gsm, min(limit, len(gsm))), rng.sample(m500, min(limit, len(m500)))
    return {"gsm8k": gsm, "math500": m500}


def _changed(gold: str, answers: list[str], i: int) -> str:
    """gold + 1 for a number, else the next row's answer that differs as text."""
    try:
        return str(int(gold) + 1)
    except ValueError:
        pass
    j = (i + 1) % len(answers)
    while gold_answer(answers[j]).replace(" ", "") == gold.replace(" ", ""):
        j = (j + 1) % len(answers)
    return gold_answer(answers[j])


def completions(answers: list[str]) -> tuple[list[RewardInput], list[RewardInput]]:
    right, wrong = [], []
    for i, answer in enumerate(answers):
        gold = gold_answer(answer)
        other = _changed(gold, answers, i)
        right.append(RewardInput(f"reasoning...\n</think>\n\nThe answer is $\\boxed{{{gold}}}$.", "reasoning",
                                 {"answer": answer}))
        wrong.append(RewardInput(f"The answer is $\\boxed{{{other}}}$.", "non_reasoning", {"answer": answer}))
    return right, wrong


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pool = RewardPool([(MathReward(num_procs=2), 1.0)], num_workers=2, timeout_s=30)
    summary = {}
    for name, answers in load_gold(args.limit, args.seed).items():
        right, wrong = completions(answers)
        start = time.time()
        r, w = pool.score(right), pool.score(wrong)
        summary[name] = {"rows": len(answers), "gold_verified": sum(o.score for o in r),
                         "changed_verified": sum(o.score for o in w), "seconds": round(time.time() - start, 1)}
        for inp, out in zip(right, r):
            if out.score != 1:
                print("gold not verified:", inp.reference["answer"][-80:], out.error)
        for inp, out in zip(wrong, w):
            if out.score != 0:
                print("changed answer verified:", inp.completion, "vs", inp.reference["answer"][-60:])
    pool.close()
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
