import json
from pathlib import Path

import pytest

from dualmode_rl.rewards.jsonl import InputError
from dualmode_rl.rewards.verify_file import verify_file


def _write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_verify_file_scores_math_and_code_rows(tmp_path):
    rows = [
        {"completion": "x</think>\n\n\\boxed{18}", "mode": "reasoning", "domain": "math", "answer": "#### 18"},
        {"completion": "\\boxed{17}", "mode": "non_reasoning", "domain": "math", "answer": "#### 18"},
        {"completion": "```python\ndef f(x):\n    return 2 * x\n```", "mode": "non_reasoning", "domain": "code",
         "test": "def check(candidate):\n    assert candidate(2) == 4\n", "entry_point": "f"},
        {"completion": "no think close", "mode": "reasoning", "domain": "code", "test": "assert 1", "entry_point": None},
    ]
    src, dst = tmp_path / "in.jsonl", tmp_path / "out" / "scored.jsonl"
    _write_rows(src, rows)
    summary = verify_file("auto", src, dst)
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [r["score"] for r in out] == [1.0, 0.0, 1.0, 0.0]
    assert out[3]["reason"] == "unclosed think" and out[0]["error"] is None is out[3]["error"]
    assert out[2]["extras"]["pass_fraction"] == 1.0 and summary["metrics"]["rewards/auto/pass_fraction"] == 1.0  # code rows only
    assert summary["metrics"]["rewards/auto/format"] == 0.75
    assert all(o["answer" if "answer" in o else "test"] for o in out)  # input fields are kept
    assert summary["rows"] == 4 and summary["mean_score"] == 0.5
    assert [p.name for p in dst.parent.iterdir()] == ["scored.jsonl"]  # no temp file left behind


@pytest.mark.parametrize("line,message", [
    ('{"mode": "reasoning"}', "line 2: missing string key 'completion'"),
    ('{"completion": "a", "mode": "think"}', "line 2: key 'mode' must be one of"),
    ("not json", "line 2: not valid JSON: Expecting value at column 1"),
    ("[1, 2]", "line 2: expected a JSON object, got list"),
])
def test_bad_rows_name_file_and_line(tmp_path, line, message):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"completion": "a", "mode": "non_reasoning", "answer": "1"}\n' + line + "\n")
    with pytest.raises(InputError) as info:
        verify_file("math", src, tmp_path / "out.jsonl")
    assert str(info.value) == f"{src}: {message}" or str(info.value).startswith(f"{src}: {message}")
    assert not (tmp_path / "out.jsonl").exists()


def test_nan_inf_and_out_of_range_are_errors_in_verify_and_in_training_alike(tmp_path):
    """One rule in rewards/ for both: verify writes valid JSON and counts the errors; the training
    reward pool (built from the config as `dualmode-rl train` builds it) scores the same way."""
    from dualmode_rl.orchestration.components import build_reward_pool
    from dualmode_rl.orchestration.config import load_config
    from dualmode_rl.rewards.types import RewardInput

    plugin = tmp_path / "values.py"
    plugin.write_text("def value(completions, **columns):\n"
                      "    return [{'nan': float('nan'), 'inf': float('inf'), 'big': 1e9, 'ok': 0.5}[c] for c in completions]\n")
    keys = ["nan", "inf", "big", "ok"]
    src = tmp_path / "in.jsonl"
    _write_rows(src, [{"completion": key, "mode": "reasoning"} for key in keys])
    summary = verify_file(f"{plugin}:value", src, tmp_path / "out.jsonl")
    reject = lambda constant: pytest.fail(f"invalid JSON constant {constant}")  # noqa: E731
    written = [json.loads(line, parse_constant=reject) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    pool = build_reward_pool(load_config(None, [f"rewards.rewards=[{{name: '{plugin}:value'}}]"]))
    trained = pool.score([RewardInput(key, "reasoning", {}) for key in keys])
    assert [(r["score"], r["error"]) for r in written] == [(o.score, o.error) for o in trained]
    assert [r["score"] for r in written] == [0.0, 0.0, 0.0, 0.5] and summary["errors"] == 3
    assert "value: returned nan, not a finite number" == written[0]["error"] and "outside [0, 1]" in written[2]["error"]


def test_verl_dict_extras_are_written_and_summarised(tmp_path):
    """examples/verl_style_reward.py returns {"score", "has_boxed"}: each row keeps its extras, and the
    summary has the per-reward metrics training logs (rewards/<name>/<key>)."""
    root = Path(__file__).resolve().parents[1] / "examples"
    summary = verify_file(f"{root / 'verl_style_reward.py'}:compute_score", root / "completions.jsonl", tmp_path / "out.jsonl")
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["score"], r["extras"]) for r in out] == [(1.0, {"has_boxed": 1.0}), (0.0, {"has_boxed": 1.0})]
    assert summary["metrics"]["rewards/compute_score/has_boxed"] == 1.0
    assert summary["metrics"]["rewards/compute_score/mean/reasoning"] == 0.0
    assert summary["metrics"]["rewards/compute_score/error_rate"] == 0.0


def test_empty_input_is_an_error(tmp_path):
    src = tmp_path / "empty.jsonl"
    src.write_text("")
    with pytest.raises(InputError, match="empty.jsonl: no rows: the file is empty"):
        verify_file("math", src, tmp_path / "out.jsonl")
