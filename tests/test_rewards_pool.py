import json
import threading
import time

import process_scan
import torch
from tolerances import tolerance

from dualmode_rl.rewards.pool import RewardPool, reward_metrics
from dualmode_rl.rewards.types import RewardInput, RewardOutput

WORKER_MARKS = ("rewards.math_worker", "rewards.sandbox_server")


class Const:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def __call__(self, inputs):
        return [RewardOutput(self.value, extras={"seen": i.completion}) for i in inputs]


class Flaky:
    name = "flaky"
    per_sample = True  # called once per sample, as verl-style rewards are

    def __call__(self, inputs):
        if inputs[0].completion == "raise":
            raise RuntimeError("boom")
        if inputs[0].completion == "hang":
            threading.Event().wait(30)
        if inputs[0].completion == "bad":
            return [0.5]
        return [RewardOutput(1.0)]


class Values:
    """A batch reward returning a given value for each sample, by its completion."""
    name = "values"

    def __init__(self, values):
        self.values = values

    def __call__(self, inputs):
        return [RewardOutput(self.values[i.completion]) for i in inputs]


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
    assert "flaky: RuntimeError: boom" in out[1].error and "timeout" in out[2].error and "expected RewardOutput" in out[3].error
    assert pool.error_counts == {"flaky": 3}
    assert [o.score for o in pool.score(inputs[:1])] == [1.5]  # the run goes on


def test_bad_values_are_errors_of_their_sample_under_one_rule():
    """NaN, inf, out of [0, 1], non-numbers and None: score 0 with the error, from a native RewardOutput
    (the built-ins' path) and from a plug-in's plain value (plugins.to_output) alike."""
    from dualmode_rl.rewards.plugins import to_output

    bad = {"nan": float("nan"), "inf": float("inf"), "big": 1e9, "negative": -0.1, "text": "0.5", "none": None, "bool": True}
    good = {"zero": 0, "quarter": 0.25, "one": 1.0}
    pool = RewardPool([(Values({**bad, **good}), 1.0)])
    out = pool.score([RewardInput(key, "reasoning", {"id": key}) for key in [*bad, *good]])
    assert [o.score for o in out] == [0.0] * len(bad) + [0.0, 0.25, 1.0]
    errors = {key: o.error for key, o in zip([*bad, *good], out)}
    assert all(errors[key].startswith("values: returned") for key in bad) and not any(errors[key] for key in good)
    assert "not a finite number" in errors["nan"] and "outside [0, 1]" in errors["big"] and "not a number" in errors["text"]
    assert pool.error_counts == {"values": len(bad)}
    assert [(o.score, o.error) for o in map(to_output, bad.values())] == [
        (0.0, e.removeprefix("values: ")) for e in list(errors.values())[:len(bad)]]


def test_a_trl_reward_returning_a_list_of_the_wrong_length_is_an_error_naming_it(tmp_path):
    from dualmode_rl.rewards.registry import load_reward

    plugin = tmp_path / "short.py"
    plugin.write_text("def one_score(completions, **columns):\n    return [1.0]\n")  # one score for the batch
    pool = RewardPool([(load_reward(f"{plugin}:one_score"), 1.0)])
    out = pool.score([RewardInput(c, "reasoning", {}) for c in "abc"])
    assert [o.score for o in out] == [0.0] * 3
    assert all(o.error == "one_score: returned a list of 1 for a batch of 3 samples (a batch call must return one "
               "value per sample)" for o in out)


def test_first_occurrence_of_each_error_is_logged_and_written_with_traceback_and_row_id(tmp_path, caplog):
    class FailsOnB:
        name = "fails_on_b"

        def __call__(self, inputs):
            if any(i.completion == "b" for i in inputs):
                raise KeyError("no answer for b")
            return [RewardOutput(1.0) for _ in inputs]

    errors = tmp_path / "run" / "errors.jsonl"
    pool = RewardPool([(FailsOnB(), 1.0)], errors_file=errors)
    batch = [RewardInput(c, "reasoning", {"id": f"row-{c}"}) for c in "abcb"]
    out = pool.score(batch)
    assert [o.score for o in out] == [1.0, 0.0, 1.0, 0.0]  # the batch that raised is re-scored sample by sample
    pool.score(batch)
    records = [json.loads(line) for line in errors.read_text().splitlines()]
    assert len(records) == 1 and pool.error_counts == {"fails_on_b": 4}  # distinct errors once, all counted
    record = records[0]
    assert (record["reward"], record["id"], record["mode"]) == ("fails_on_b", "row-b", "reasoning")
    assert record["error"] == "KeyError: 'no answer for b'" and 'raise KeyError("no answer for b")' in record["traceback"]
    assert "'fails_on_b' failed on row id row-b" in caplog.text and "no answer for b" in caplog.text


def test_reward_metrics_per_reward_and_mode():
    outputs = [RewardOutput(0.0, extras={"a": 1.0, "a/has_boxed": 1.0, "a/note": "text", "b": 0.0, "b/error": "boom"}),
               RewardOutput(0.0, extras={"a": 0.0, "a/has_boxed": 0.0, "b": 0.5})]
    metrics = reward_metrics(outputs, ["reasoning", "non_reasoning"])
    assert metrics == {
        "rewards/a/mean": 0.5, "rewards/a/mean/reasoning": 1.0, "rewards/a/mean/non_reasoning": 0.0,
        "rewards/a/error_rate": 0.0, "rewards/a/error_rate/reasoning": 0.0, "rewards/a/error_rate/non_reasoning": 0.0,
        "rewards/a/has_boxed": 0.5,
        "rewards/b/mean": 0.5, "rewards/b/mean/non_reasoning": 0.5,  # only the sample it scored
        "rewards/b/error_rate": 0.5, "rewards/b/error_rate/reasoning": 1.0, "rewards/b/error_rate/non_reasoning": 0.0}


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
