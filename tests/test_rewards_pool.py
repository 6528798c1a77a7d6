import threading
import time

import process_scan
import torch
from tolerances import tolerance

from dualmode_rl.rewards.pool import RewardPool
from dualmode_rl.rewards.types import RewardInput, RewardOutput

WORKER_MARKS = ("rewards.math_worker", "rewards.sandbox_server")


class Const:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def __call__(self, inputs):
        return [RewardOutput(self.value, extras={"seen": i.completion}) for i in inputs]


class Flaky:
    name = "flaky"

    def __call__(self, inputs):
        if inputs[0].completion == "raise":
            raise RuntimeError("boom")
        if inputs[0].completion == "hang":
            threading.Event().wait(30)
        if inputs[0].completion == "bad":
            return [0.5]
        return [RewardOutput(1.0)]


def test_weighted_sum_with_components_in_extras():
    pool = RewardPool([(Const("a", 1.0), 0.7), (Const("b", 0.5), 0.2)], num_workers=2)
    out = pool.score([RewardInput("x", "non_reasoning", {})])
    # 0.7 * 1.0 + 0.2 * 0.5 in float64: three rounded literals, two products and a sum, all <= 0.8
    assert abs(out[0].score - 0.8) <= tolerance(torch.float64, 6, 0.8)
    assert out[0].extras["a"] == 1.0 and out[0].extras["b"] == 0.5 and out[0].extras["a/seen"] == "x"
    assert out[0].error is None and not pool.error_counts


def test_raise_hang_and_malformed_score_zero_and_are_counted():
    pool = RewardPool([(Flaky(), 1.0), (Const("c", 1.0), 0.5)], num_workers=2, timeout_s=0.5)
    inputs = [RewardInput(c, "non_reasoning", {}) for c in ("ok", "raise", "hang", "bad", "ok")]
    start = time.monotonic()
    out = pool.score(inputs)
    assert time.monotonic() - start < 5
    assert [o.score for o in out] == [1.5, 0.5, 0.5, 0.5, 1.5]
    assert "flaky: RuntimeError: boom" in out[1].error and "timeout" in out[2].error and "TypeError" in out[3].error
    assert pool.error_counts == {"flaky": 3}
    assert [o.score for o in pool.score(inputs[:1])] == [1.5]  # the run goes on


def _reward_processes() -> list[process_scan.SeenProcess]:
    procs = process_scan.descendants()
    return [p for m in WORKER_MARKS for p in process_scan.running(m, procs)]


def test_dead_reward_workers_are_replaced_and_the_next_batch_scores_in_full():
    """The built-in verifiers' worker processes (Math-Verify workers, code sandbox servers) killed
    between batches: the next batch is scored exactly as before, with fresh workers, and the dead
    ones are reaped."""
    from dualmode_rl.rewards.registry import load_reward

    pool = RewardPool([(load_reward("auto"), 1.0)], num_workers=2, timeout_s=30)
    code = {"domain": "code", "test": "assert inc(1) == 2\nassert inc(5) == 6\n", "entry_point": None}
    batch = [RewardInput("\\boxed{12}", "non_reasoning", {"domain": "math", "answer": "12"}),
             RewardInput("so 7\n</think>\n\n\\boxed{7}", "reasoning", {"domain": "math", "answer": "8"}),
             RewardInput("```python\ndef inc(x):\n    return x + 1\n```", "non_reasoning", code),
             RewardInput("```python\ndef inc(x):\n    return x\n```", "non_reasoning", code)]
    try:
        first = pool.score(batch)
        assert [o.score for o in first] == [1.0, 0.0, 1.0, 0.0] and first[0].error is None is first[2].error
        workers = _reward_processes()
        assert {m for m in WORKER_MARKS for p in workers if m in p.cmdline} == set(WORKER_MARKS)
        for proc in workers:
            process_scan.kill(proc.pid)
            process_scan.wait_until_exited(proc.pid)
        again = pool.score(batch)
        assert [(o.score, o.error) for o in again] == [(o.score, o.error) for o in first]
        assert not {p.pid for p in workers} & {p.pid for p in _reward_processes()}  # served by new workers
        assert [p.pid for p in workers if process_scan.exists(p.pid)] == []  # the dead ones were reaped
    finally:
        pool.close()
