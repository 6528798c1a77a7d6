import json
import sys
import time
from pathlib import Path

import pytest

from dualmode_rl.rewards.math import MathReward, gold_answer, last_boxed, refusal
from dualmode_rl.rewards.math_worker import MathVerifyPool
from dualmode_rl.rewards.types import RewardInput

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.math_gold import completions, load_gold  # noqa: E402


@pytest.fixture(scope="module")
def pool():
    p = MathVerifyPool(num_procs=2, timeout_s=10)
    yield p
    p.close()


def test_extraction_helpers():
    assert last_boxed(r"first \boxed{1} then \boxed{\frac{a}{b}} end") == r"\frac{a}{b}"
    assert last_boxed("no box") is None and last_boxed(r"\boxed{unclosed") is None
    assert gold_answer("Janet sells...\n#### 1,018") == "1018"
    assert gold_answer(r"so it is $\boxed{\pi}$.") == r"\pi" and gold_answer(" 3/4 ") == "3/4"
    assert refusal("10^10^10") and refusal("2^{3^{4}}") and refusal("x" * 600) and refusal("9^{99999}")
    assert refusal("x^5 - x^4 + 1") is None and refusal(r"2^{10} + e^{i\pi}") is None


def test_math_equivalence_cases_agree_with_labels(pool):
    from concurrent.futures import ThreadPoolExecutor
    rows = [json.loads(line) for line in open(DATA / "math_equivalence" / "cases.jsonl")]
    rows = [r for r in rows if not r.get("note")]

    def equal(r):
        ext = None if r["extraction"] == "parse_default" else r["extraction"]
        return pool.equal(r["pred"], r["gold"], pred_extraction=ext, gold_extraction=ext,
                          float_rounding=r["float_rounding"], strict=r["strict"],
                          allow_set_relation_comp=r["allow_set_relation_comp"])[0]

    with ThreadPoolExecutor(2) as ex:
        got = list(ex.map(equal, rows))
    agreement = sum(g == r["equal"] for g, r in zip(got, rows)) / len(rows)
    assert agreement >= 0.95, agreement


def test_gold_answers_verify_and_changed_answers_do_not(pool):
    reward = MathReward(pool=pool)
    for name, answers in load_gold(limit=60, seed=1).items():
        right, wrong = completions(answers)
        assert [o.score for o in reward(right)] == [1.0] * len(right), name
        assert [o.score for o in reward(wrong)] == [0.0] * len(wrong), name


def test_strict_boxed_and_format_rules(pool):
    reward = MathReward(pool=pool)
    ref = {"answer": "#### 18"}
    out = reward([RewardInput("The answer is 18", "non_reasoning", ref),
                  RewardInput(r"\boxed{18} is wrong, \boxed{17}", "non_reasoning", ref),
                  RewardInput(r"\boxed{18}", "reasoning", ref),
                  RewardInput(r"hmm</think>\n\n\boxed{18.0}[|endofturn|]", "reasoning", ref),
                  RewardInput(r"\boxed{10^{10^{10}}}", "non_reasoning", ref)])
    assert [o.score for o in out] == [0, 0, 0, 1, 0]
    assert out[0].reason == "no \\boxed{} answer" and out[2].reason == "unclosed think"
    assert out[4].reason.startswith("refused") and not any(o.error for o in out)


def test_hung_worker_is_killed_and_replaced():
    pool = MathVerifyPool(num_procs=1, timeout_s=1.0)
    try:
        start = time.monotonic()
        # Not through MathReward (which refuses it): the worker itself must be stopped from outside.
        equal, error = pool.equal(r"\boxed{2^{2^{40}}}", r"\boxed{3}",
                                  pred_extraction=["latex"], gold_extraction=["latex"])
        # Left alone the worker would compute for hours; killed at the 1 s timeout and restarted, the call
        # returns within seconds (a minute leaves room for a restart on a loaded box).
        assert not equal and "timeout" in error and time.monotonic() - start < 60
        assert pool.restarts == 1
        assert pool.equal(r"\boxed{2}", r"\boxed{2}") == (True, None)
    finally:
        pool.close()
