import gzip
import json
from pathlib import Path

import pytest

from dualmode_rl.rewards.code import CodeReward, extract_program
from dualmode_rl.rewards.sandbox import Sandbox
from dualmode_rl.rewards.types import RewardInput

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def reward():
    r = CodeReward(sandbox=Sandbox(num_workers=2, timeout_s=10))
    yield r
    r.close()


def _humaneval():
    return [json.loads(line) for line in gzip.open(DATA / "humaneval" / "HumanEval.jsonl.gz", "rt")]


def _as_completion(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}```\n"


def test_extract_program():
    assert extract_program("a\n```python\nx = 1\n```\nb\n```python\nx = 2\n```") == "x = 2\n"
    assert extract_program("```\ny = 3\n```") == "y = 3\n"
    assert extract_program("z = 4") == "z = 4"


def test_humaneval_canonical_pass_and_return_none_fails(reward):
    rows = _humaneval()
    refs = [{"test": r["test"], "entry_point": r["entry_point"]} for r in rows]
    good = reward([RewardInput(_as_completion(r["prompt"] + r["canonical_solution"]), "non_reasoning", ref)
                   for r, ref in zip(rows, refs)])
    assert [r["task_id"] for r, o in zip(rows, good) if o.score != 1.0] == []
    assert all(o.extras["pass_fraction"] == 1.0 for o in good)
    bad = reward([RewardInput(_as_completion(r["prompt"] + "    return None\n"), "non_reasoning", ref)
                  for r, ref in zip(rows, refs)])
    assert [r["task_id"] for r, o in zip(rows, bad) if o.score != 0.0] == []


def test_sanitized_mbpp_canonical_pass(reward):
    rows = json.load(open(DATA / "mbpp" / "sanitized-mbpp.json"))
    out = reward([RewardInput(_as_completion(r["code"] + "\n"), "non_reasoning",
                              {"test": "\n".join(r["test_imports"] + r["test_list"]), "entry_point": None})
                  for r in rows])
    assert [r["task_id"] for r, o in zip(rows, out) if o.score != 1.0] == []


def test_pass_fraction_and_reasoning_mode(reward):
    program = "def inc(x):\n    return x + 1 if x < 3 else x\n"
    ref = {"test": "assert inc(1) == 2\nassert inc(2) == 3\nassert inc(5) == 6\nassert inc(9) == 10\n",
           "entry_point": None}
    out = reward([RewardInput(f"plan</think>\n\n```python\n{program}```[|endofturn|]", "reasoning", ref),
                  RewardInput(f"```python\n{program}```", "reasoning", ref)])
    assert out[0].score == 0.0 and out[0].extras["pass_fraction"] == 0.5
    assert out[1].reason == "unclosed think" and out[1].error is None


def test_stdin_stdout_tests(reward):
    ref = {"tests": [{"input": "2 3\n", "output": "5\n"}, {"input": "10 -4\n", "output": "6"}]}
    good = "a, b = map(int, input().split())\nprint(a + b)\n"
    wrong = "a, b = map(int, input().split())\nprint(a * b)\n"
    out = reward([RewardInput(f"```python\n{good}```", "non_reasoning", ref),
                  RewardInput(f"```python\n{wrong}```", "non_reasoning", ref)])
    assert [o.score for o in out] == [1.0, 0.0]
    assert out[1].extras["pass_fraction"] == 0.0


def test_row_without_tests_is_an_error(reward):
    out = reward([RewardInput("```python\nx=1\n```", "non_reasoning", {"entry_point": "f"})])
    assert out[0].score == 0.0 and "bad code reference" in out[0].error
