"""Metrics sinks (TensorBoard, W&B offline) and the report: what a run logs, read back from its files."""
from __future__ import annotations

import json

import pytest
from tensorboard_events import scalar_events
from test_ecosystem import _text_events, _wandb_offline_run

from dualmode_rl.orchestration.config import load_config
from dualmode_rl.orchestration.metrics import MetricsLogger, sample_rows
from dualmode_rl.orchestration.report import smoothed, write_report
from dualmode_rl.rewards.types import RewardOutput
from dualmode_rl.rollout.types import RolloutGroup, Sample


class Tokenizer:
    """Decodes token ids as their numbers: enough to tell which group's prompt a sample row holds."""

    def decode(self, ids):
        return " ".join(map(str, ids))


def groups_and_outputs(step: int):
    groups = [RolloutGroup(f"{i}", mode, [step, i], [Sample([1], [-0.1], f"answer {step}.{i}.{j}", "stop") for j in range(2)])
              for i, mode in enumerate(["reasoning", "non_reasoning", "reasoning", "reasoning"])]
    outputs = [RewardOutput(0.5 * j, extras={"auto": 0.5 * j, "auto/format": 1.0}) for _ in groups for j in range(2)]
    return groups, outputs


def test_sample_rows_take_the_first_sample_of_the_first_prompts_per_mode():
    groups, outputs = groups_and_outputs(3)
    rows = sample_rows(groups, outputs, Tokenizer(), per_mode=2)
    assert [(r["mode"], r["prompt"], r["completion"]) for r in rows] == [
        ("reasoning", "3 0", "answer 3.0.0"), ("non_reasoning", "3 1", "answer 3.1.0"), ("reasoning", "3 2", "answer 3.2.0")]
    assert rows[0]["reward"] == 0.0 and rows[0]["rewards"] == {"auto": 0.0} and rows[0]["error"] is None


def test_tensorboard_and_wandb_offline_get_config_metrics_and_samples_and_a_resume_cuts_both_files(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = load_config(None, ["train.report_to=[tensorboard, wandb]", "train.log_samples_every=2", "train.samples_logged=1",
                             "algorithm.beta=0.01"])
    logger = MetricsLogger(tmp_path, keep_until_step=0, config=cfg, tokenizer=Tokenizer())
    for step in range(1, 5):
        logger.log(step, {"loss": 1.0 / step, "reasoning/reward": 0.1 * step})
        logger.log_samples(step, *groups_and_outputs(step))
    logger.close()
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [(s["step"], s["mode"]) for s in samples] == [(2, "reasoning"), (2, "non_reasoning"), (4, "reasoning"),
                                                         (4, "non_reasoning")]
    assert [step for step, _ in scalar_events(tmp_path / "tensorboard", "loss")] == [1, 2, 3, 4]
    assert [step for step, _ in _text_events(tmp_path / "tensorboard")] == [2, 2, 4, 4]
    config, history = _wandb_offline_run(tmp_path)
    assert config["algorithm"]["beta"] == 0.01 and config["train"]["log_samples_every"] == 2
    scalars = [h for h in history if "loss" in h]
    assert [(h["_step"], h["loss"], h["reasoning/reward"]) for h in scalars] == [
        (step, 1.0 / step, pytest.approx(0.1 * step)) for step in range(1, 5)]
    tables = [h for h in history if h.get("samples/_type") == "table-file"]  # the sample completions
    assert [h["_step"] for h in tables] == [2, 4]
    (files,) = tmp_path.glob("wandb/offline-run-*/files")
    table = json.loads((files / tables[0]["samples/path"]).read_text())
    assert table["columns"] == ["mode", "prompt", "completion", "reward", "error"]
    assert [row[:3] for row in table["data"]] == [["reasoning", "2 0", "answer 2.0.0"], ["non_reasoning", "2 1", "answer 2.1.0"]]

    resumed = MetricsLogger(tmp_path, keep_until_step=3, config=load_config(), tokenizer=Tokenizer())
    resumed.close()
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert {json.loads(line)["step"] for line in (tmp_path / "samples.jsonl").read_text().splitlines()} == {2}
    assert [step for step, _ in _text_events(tmp_path / "tensorboard")] == [2, 2]


def test_wandb_without_a_login_or_offline_mode_stops_start_up_naming_the_fix(monkeypatch, tmp_path):
    from dualmode_rl.orchestration.config import ConfigError
    from dualmode_rl.orchestration.preflight import check_report_to

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))  # no saved login
    monkeypatch.setenv("HOME", str(tmp_path))  # nor a ~/.netrc
    with pytest.raises(ConfigError, match="WANDB_MODE=offline"):
        check_report_to(load_config(None, ["train.report_to=[wandb]"]))


def test_smoothing_is_tensorboards_debiased_moving_average():
    assert smoothed([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])  # debiased: a constant stays put
    # by hand, weight 0.5: (0.5 * 0 + 0.5 * 2) / 0.5 = 2, then (0.5 * 1 + 0.5 * 4) / 0.75 = 10 / 3
    assert smoothed([2.0, 4.0], 0.5) == pytest.approx([2.0, 10 / 3])
    assert smoothed([3.0, 5.0], 0.0) == [3.0, 5.0]


def test_report_has_panels_eval_before_after_and_sample_tables(tmp_path):
    run = tmp_path / "train"
    run.mkdir()
    rows = [{"step": s, "loss": 1.0 / s, "entropy": 2.0, "entropy/reasoning": 2.1, "kl": 0.01 * s, "grad_norm": 0.5,
             "reasoning/reward": 0.1 * s} for s in range(1, 5)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sample = {"step": 2, "mode": "reasoning", "prompt": "[|system|]\nBe brief.[|endofturn|]\n[|user|]\n2+2?",
              "completion": "2+2=4\n</think>\n\n| \\boxed{4}", "reward": 1.0, "rewards": {"auto": 1.0}, "error": None}
    (run / "samples.jsonl").write_text(json.dumps(sample) + "\n")
    (tmp_path / "summary.json").write_text(json.dumps({  # as `dualmode-rl demo` writes it, beside train/
        "before": {"reasoning": {"accuracy": 0.5}, "non_reasoning": {"accuracy": 0.25}},
        "after": {"reasoning": {"accuracy": 0.625}, "non_reasoning": {"accuracy": 0.25}}}))
    text = write_report(run).read_text()
    for panel in ("loss", "entropy", "kl", "grad_norm", "reward"):
        assert f"![{panel}](report_plots/{panel}.png)" in text and (run / "report_plots" / f"{panel}.png").stat().st_size > 1000
    assert "| reasoning | 0.500 | 0.625 | +0.125 |" in text and "| non_reasoning | 0.250 | 0.250 | +0.000 |" in text
    assert "### reasoning" in text and "### non_reasoning" not in text
    assert "2+2=4<br>&lt;/think&gt;<br><br>\\| \\boxed{4}" in text  # one table cell: escaped, tags shown
