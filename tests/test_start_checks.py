"""Start-up checks (orchestration/preflight.py): a user's mistake is one line naming its culprit, before any
Ray actor or vLLM engine starts and before anything is written to train.out; a resume never guesses.

The commands run in-process through the CLI's `main` (the same code path as the `dualmode-rl` command,
without paying Python's start-up per case); every case here stops in the preflight, so none starts Ray."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from tensorboard_events import scalar_events

from dualmode_rl.orchestration.checkpoint import LoopState, save_checkpoint
from dualmode_rl.orchestration.cli import main
from dualmode_rl.orchestration.config import dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


@pytest.fixture(scope="module")
def models(tiny_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The tiny checkpoint, a copy of it, one whose chat template ignores enable_thinking, one with no template."""
    root = tmp_path_factory.mktemp("models")
    template = (tiny_checkpoint / "chat_template.jinja").read_text()
    switch = "{%- if not enable_thinking is defined or not enable_thinking -%}{{- '\\n</think>\\n\\n' -}}{%- endif -%}"
    assert switch in template  # the bootstrap template's mode switch, removed below
    no_switch = _copy_model(tiny_checkpoint, root / "no_switch")
    (no_switch / "chat_template.jinja").write_text(template.replace(switch, ""))
    no_template = _copy_model(tiny_checkpoint, root / "no_template")
    (no_template / "chat_template.jinja").unlink()
    return {"tiny": tiny_checkpoint, "copy": _copy_model(tiny_checkpoint, root / "copy"),
            "no_switch": no_switch, "no_template": no_template}


def test_a_chat_template_that_ignores_enable_thinking_stops_train_and_check(models, tmp_path, capsys):
    run = tmp_path / "run"
    code, out = run_cli(capsys, "train", "--model", models["no_switch"], f"train.out={run}")
    assert code == 2 and f"{models['no_switch']}: the chat template ignores enable_thinking" in out
    assert not run.exists()
    code, out = run_cli(capsys, "check", ROOT / "configs" / "demo.yaml", "--model", models["no_switch"])
    assert code == 1 and "[FAILED] config, data, model folder" in out and "ignores enable_thinking" in out


@pytest.mark.parametrize("existing", [False, True])
def test_a_missing_chat_template_stops_the_start_and_leaves_train_out_as_it_was(models, tmp_path, capsys, existing):
    run = tmp_path / "run"
    if existing:
        run.mkdir()
        (run / "notes.txt").write_text("mine")
    code, out = run_cli(capsys, "train", "--model", models["no_template"], f"train.out={run}")
    assert code == 2 and f"{models['no_template']}: the tokenizer has no chat template" in out
    assert "Traceback" not in out and "Ray" not in out
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"] if existing else not run.exists()


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "a", "mode": "reasoning"}\n{"prompt": "b", "mode": "reasoning"}\n{"prompt": "c", "mode": reasoning}\n',
     "line 3: not valid JSON: Expecting value at column 25"),
    ("", "no rows: the file is empty"),
    ('{"prompt": "a", "mode": "reasoning"}\n{"prompt": "b", "mode": "thinking"}\n', "row 2: mode 'thinking' is not one of"),
])
def test_prompt_file_errors_name_the_line_and_leave_no_run_folder(models, tmp_path, capsys, content, message):
    prompts, run = tmp_path / "prompts.jsonl", tmp_path / "run"
    prompts.write_text(content)
    code, out = run_cli(capsys, "train", "--model", models["tiny"], f"data.train={prompts}", f"train.out={run}")
    assert code == 2 and f"dualmode-rl: {prompts}: {message}" in out and not run.exists()


def test_generation_longer_than_max_model_len_is_an_error_naming_both_keys_and_the_row(models, tmp_path, capsys):
    run = tmp_path / "run"
    code, out = run_cli(capsys, "train", "--model", models["tiny"], f"train.out={run}", "rollout.reasoning.max_tokens=1000")
    line = out.strip().splitlines()[-1]
    assert code == 2 and line.startswith("dualmode-rl: rollout.max_model_len=1024 (default: the model's max_position_embeddings)")
    assert "rollout.reasoning.max_tokens=1000" in line and f"the longest reasoning prompt, {models['tiny']} row " in line
    assert not run.exists()


def test_max_model_len_defaults_to_the_models_and_is_capped_on_cpu(models, tmp_path):
    from dualmode_rl.orchestration.components import max_model_len
    from dualmode_rl.orchestration.config import CPU_MAX_MODEL_LEN

    assert max_model_len(load_config(None, [f"model={models['tiny']}"])) == 1024  # its config.json
    long = _copy_model(models["tiny"], tmp_path / "long")
    config = json.loads((long / "config.json").read_text())
    (long / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 131072}))
    assert max_model_len(load_config(None, [f"model={long}"])) == CPU_MAX_MODEL_LEN
    assert max_model_len(load_config(None, [f"model={long}", "rollout.gpus_per_worker=1"])) == 131072
    assert max_model_len(load_config(None, [f"model={long}", "rollout.max_model_len=2048"])) == 2048


# ---- resume ---------------------------------------------------------------------------------------

@pytest.fixture
def stopped_run(models, tmp_path) -> tuple[Path, list[str]]:
    """A run folder as a stopped `dualmode-rl train` leaves it: config.yaml and two checkpoints, written by the
    real learner and save_checkpoint (no rollout: only the files matter here). Returns it and its CLI arguments."""
    from transformers import AutoTokenizer

    from dualmode_rl.rl.learner import Learner, LearnerConfig

    run = tmp_path / "run"
    args = ["--model", str(models["tiny"]), f"train.out={run}"]
    run.mkdir()
    dump_config(load_config(None, [f"model={models['tiny']}", f"train.out={run}"]), run / "config.yaml")
    learner, tokenizer = Learner(LearnerConfig(model_path=str(models["tiny"]))), AutoTokenizer.from_pretrained(models["tiny"])
    (run / "metrics.jsonl").write_text("")
    for step in (1, 2):
        save_checkpoint(run, LoopState(step, {"epoch": 0, "position": 4 * step}), learner, tokenizer, run / "metrics.jsonl")
    return run, args


def test_resume_without_a_checkpoint_is_an_error_unless_auto(models, tmp_path, capsys, caplog):
    from dualmode_rl.orchestration.preflight import resume_point

    run = tmp_path / "empty_run"
    code, out = run_cli(capsys, "train", "--model", models["tiny"], f"train.out={run}", "--resume")
    assert code == 2 and f"{run}: --resume, but there is no checkpoint to resume from" in out and not run.exists()
    caplog.set_level(logging.INFO)
    state, checkpoint, start = resume_point(load_config(None, [f"model={models['tiny']}", f"train.out={run}"]), "auto", False)
    assert (state, checkpoint, start) == (LoopState(), None, str(models["tiny"]))
    assert "starting from step 0 (--resume=auto)" in caplog.text


def test_resume_with_another_model_or_data_lists_the_changes_and_keeps_config_yaml(models, stopped_run, capsys):
    from dualmode_rl.orchestration.preflight import resume_point

    run, _ = stopped_run
    before = (run / "config.yaml").read_text()
    prompts = ROOT / "examples" / "prompts.jsonl"
    changed = ["--model", models["copy"], f"train.out={run}", f"data.train={prompts}", "algorithm.beta=0.01"]
    code, out = run_cli(capsys, "train", *changed, "--resume")
    assert code == 2 and f"{run / 'config.yaml'}: this resume changes the run's settings: " in out
    assert f"algorithm.beta: 0.001 -> 0.01; data.train: None -> '{prompts}'; model: '{models['tiny']}' -> '{models['copy']}'" in out
    assert "--allow-config-change" in out and (run / "config.yaml").read_text() == before
    cfg = load_config(None, [f"model={models['copy']}", f"train.out={run}", f"data.train={prompts}", "algorithm.beta=0.01"])
    state, checkpoint, _ = resume_point(cfg, "yes", allow_config_change=True)
    assert checkpoint.name == "step_000002" and state.step == 2


@pytest.mark.parametrize("part", ["policy/model.safetensors", "trainer/learner_state.pt"])
def test_a_truncated_checkpoint_file_is_named_and_the_previous_checkpoint_offered(stopped_run, capsys, part):
    run, args = stopped_run
    broken = run / "checkpoints" / "step_000002" / part
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    code, out = run_cli(capsys, "train", *args, "--resume")
    line = out.strip().splitlines()[-1]
    assert code == 2 and line.startswith(f"dualmode-rl: checkpoint step_000002 is corrupt: {broken}") and "truncated" in line
    assert f"the previous checkpoint step_000001 is whole: resume from it with `echo step_000001 > {run}/checkpoints/latest`" in line


def test_resume_drops_tensorboard_events_after_the_checkpoint(tmp_path):
    """Events are read back raw (no TensorBoard-side purging): each step once, with the resumed run's values."""
    from dualmode_rl.orchestration.metrics import MetricsLogger

    first = MetricsLogger(tmp_path)
    for step in range(1, 6):  # killed after step 5, last checkpoint at step 3
        first.log(step, {"reward": float(step)})
    first.close()
    resumed = MetricsLogger(tmp_path, keep_until_step=3)
    for step in range(4, 7):
        resumed.log(step, {"reward": 10.0 * step})
    resumed.close()
    events = scalar_events(tmp_path / "tensorboard", "reward")
    assert sorted(events) == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
