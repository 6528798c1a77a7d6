import json

import pytest

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
    assert out[3]["error"] == "unclosed think" and out[0]["error"] is None
    assert all(o["answer" if "answer" in o else "test"] for o in out)  # input fields are kept
    assert summary["rows"] == 4 and summary["mean_score"] == 0.5
    assert [p.name for p in dst.parent.iterdir()] == ["scored.jsonl"]  # no temp file left behind


@pytest.mark.parametrize("line,message", [
    ('{"mode": "reasoning"}', "row 2: missing string key 'completion'"),
    ('{"completion": "a", "mode": "think"}', "row 2: key 'mode' must be one of"),
    ("not json", "row 2: not JSON"),
])
def test_bad_rows_name_file_and_row(tmp_path, line, message):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"completion": "a", "mode": "non_reasoning", "answer": "1"}\n' + line + "\n")
    with pytest.raises(ValueError) as info:
        verify_file("math", src, tmp_path / "out.jsonl")
    assert str(src) in str(info.value) and message in str(info.value)
    assert not (tmp_path / "out.jsonl").exists()
