"""CLI smoke tests: the `dualmode-rl` command as a user runs it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

DUALMODE_RL = str(Path(sys.executable).parent / "dualmode-rl")


def cli(*args, cwd=None, timeout=600):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([DUALMODE_RL, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def test_help_lists_commands():
    out = cli("--help")
    assert out.returncode == 0
    for command in ("bootstrap", "eval", "verify", "filter", "train", "check", "report", "demo"):
        assert command in out.stdout


def test_config_error_names_the_key():
    out = cli("train", "train.stepz=3")
    assert out.returncode == 2
    assert "train.stepz" in out.stderr and "unknown key" in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_model_is_a_clear_error(tmp_path):
    out = cli("eval", "--model", tmp_path / "nope")
    assert out.returncode == 2 and str(tmp_path / "nope") in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "empty").mkdir()
    out = cli("train", "--model", tmp_path / "empty", f"train.out={tmp_path / 'run'}")
    assert out.returncode == 2 and "not a loadable model" in out.stderr


def test_bad_reward_plugin_is_named_at_start_up(tmp_path, tiny_checkpoint):
    out = cli("eval", "--model", tiny_checkpoint, "eval.reward=nosuch_pkg.mod:fn")
    assert out.returncode == 2 and "nosuch_pkg.mod:fn" in out.stderr


def test_verify_scores_a_file(tmp_path):
    rows = [
        {"completion": "7+5=12\n</think>\n\nThe answer is \\boxed{12}.", "mode": "reasoning", "answer": "12"},
        {"completion": "The answer is \\boxed{13}.", "mode": "non_reasoning", "answer": "12"},
        {"completion": "no think close \\boxed{12}", "mode": "reasoning", "answer": "12"},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = cli("verify", "--reward", "math", "--input", src, "--output", tmp_path / "out.jsonl")
    assert out.returncode == 0, out.stderr
    scored = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["score"] for r in scored] == [1.0, 0.0, 0.0]


def test_verify_input_errors_are_one_line_with_exit_code_2(tmp_path):
    bad, empty = tmp_path / "bad.jsonl", tmp_path / "empty.jsonl"
    bad.write_text('{"completion": "x", "mode": "reasoning"}\n{"completion": 3, "mode": "reasoning"}\n')
    empty.write_text("")
    for path, message in ((bad, "line 2: missing string key 'completion'"), (empty, "no rows: the file is empty")):
        out = cli("verify", "--reward", "math", "--input", path, "--output", tmp_path / "out.jsonl")
        assert (out.returncode, out.stderr) == (2, f"dualmode-rl: {path}: {message}\n")
    assert not (tmp_path / "out.jsonl").exists()


def test_report_from_metrics(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"step": s, "reasoning/reward": 0.1 * s, "non_reasoning/reward": 0.05 * s, "kl": 0.01 * s,
              "time/rollout": 1.0, "time/learner": 2.0} for s in range(1, 4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = cli("report", run)
    assert out.returncode == 0, out.stderr
    text = (run / "report.md").read_text()
    assert "3 steps logged" in text and "![reward]" in text and "![kl]" in text
    assert (run / "report_plots" / "reward.png").stat().st_size > 1000


@pytest.mark.slow
def test_eval_writes_the_documented_json(tmp_path, tiny_checkpoint):
    out = cli("eval", "--model", tiny_checkpoint, "--json", tmp_path / "e.json", "eval.limit=6",
                "rollout.reasoning.max_tokens=16", "rollout.non_reasoning.max_tokens=16")
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads((tmp_path / "e.json").read_text())
    assert set(report) == {"reasoning", "non_reasoning"}
    for mode in report.values():
        assert {"accuracy", "n", "by_domain", "mean_length", "malformed"} <= set(mode)
        assert mode["n"] == 6 and 0 <= mode["accuracy"] <= 1 and 0 <= mode["malformed"] <= 1
    assert "reasoning" in out.stdout and "accuracy" in out.stdout
    assert "4/4" in out.stderr and "accuracy: reasoning" in out.stderr  # the progress bar
