"""The ecosystem trio unchanged: a verl-format parquet, a TRL-format messages dataset and TRL's own reward
functions, through `dualmode-rl verify` and a short `dualmode-rl train`; the system prompt reaches the
engine's rendered prompt in training and in eval, and the rewards' `prompts`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ecosystem_data import TRL_SYSTEM, VERL_SYSTEM, gsm8k_rows, trl_messages_jsonl, verl_parquet
from tensorboard_events import scalar_events

from dualmode_rl.orchestration.cli import main

BIN = Path(sys.executable).parent
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ACCURACY = "{name: trl.rewards:accuracy_reward, columns: {solution: answer}}"
OVERLONG = ("{name: trl.rewards:get_soft_overlong_punishment, args: {max_completion_len: 20, soft_punish_cache: 10}, "
            "range: [-1, 0]}")


def verify(capsys, *args) -> tuple[dict, list[dict]]:
    out = Path(args[args.index("--output") + 1])
    code = main(["verify", *map(str, args)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    return json.loads(captured.out.strip().splitlines()[-1]), [json.loads(line) for line in out.read_text().splitlines()]


def test_verify_runs_the_trio_unchanged(tmp_path, capsys):
    """A verl parquet (plus its completions) with the built-in verifier and a verl-style reward; a TRL
    messages dataset with trl.rewards' accuracy_reward, think_format_reward and soft overlong punishment."""
    golds = [r["gold"] for r in gsm8k_rows(4)]
    right = [f"{g} it is</think>\n\nThe answer is \\boxed{{{g}}}." for g in golds]  # a reasoning turn
    completions = [right[0].split("</think>\n\n")[1], right[1], "\\boxed{-1}", "no think close"]
    parquet = verl_parquet(tmp_path / "verl.parquet", count=4, completions=completions)  # modes: non, reas, non, reas
    summary, rows = verify(capsys, "--reward", "auto", "--input", parquet, "--output", tmp_path / "auto.jsonl")
    assert [r["score"] for r in rows] == [1.0, 1.0, 0.0, 0.0] and summary["errors"] == 0
    assert rows[0]["reward_model"]["ground_truth"] == golds[0]  # written back as read
    _, rows = verify(capsys, "--reward", f"{EXAMPLES / 'verl_style_reward.py'}:compute_score", "--input", parquet,
                     "--output", tmp_path / "verl.jsonl")
    assert [r["score"] for r in rows] == [1.0, 1.0, 0.0, 0.0]

    modes = ["non_reasoning", "reasoning", "non_reasoning", "reasoning"]
    trl = trl_messages_jsonl(tmp_path / "trl.jsonl", count=4, completions=completions, modes=modes)
    summary, rows = verify(capsys, "--reward", "trl.rewards:accuracy_reward", "--completion-format", "messages",
                           "--input", trl, "--output", tmp_path / "accuracy.jsonl")  # TRL's data has `solution`
    # TRL's accuracy_reward reads the first \boxed{} wherever it is: the unclosed reasoning scores 0 (no boxed)
    assert [r["score"] for r in rows] == [1.0, 1.0, 0.0, 0.0] and summary["errors"] == 0
    _, rows = verify(capsys, "--reward", "trl.rewards:think_format_reward", "--completion-format", "messages",
                     "--input", trl, "--output", tmp_path / "think.jsonl")
    assert [r["score"] for r in rows] == [0.0, 1.0, 0.0, 0.0]  # only a closed think block passes
    lengths = [5, 15, 20, 25]
    trl_ids = tmp_path / "trl_ids.jsonl"
    trl_ids.write_text("".join(json.dumps({**json.loads(line), "completion_ids": [7] * n}) + "\n"
                               for line, n in zip(trl.read_text().splitlines(), lengths)))
    summary, rows = verify(capsys, "--reward", OVERLONG, "--input", trl_ids, "--output", tmp_path / "overlong.jsonl")
    assert [r["score"] for r in rows] == [0.0, -0.5, -1.0, -1.0] and summary["errors"] == 0


@pytest.mark.slow
def test_train_on_verl_and_trl_data_with_trl_rewards_wandb_and_report(tmp_path, tiny_checkpoint):
    """One short `dualmode-rl train` (transformers engine, tiny settings as test_train_loop's SHORT) on a
    weighted mix of a verl GSM8K parquet and a TRL messages dataset (each with its own system prompt),
    scored by the built-in verifier plus TRL's three reward functions unchanged and a plug-in that
    checks its `prompts`; logging to TensorBoard and W&B offline, samples every step; then the report."""
    verl = verl_parquet(tmp_path / "verl.parquet", count=6)
    trl = trl_messages_jsonl(tmp_path / "trl.jsonl", count=6)
    probe = tmp_path / "probe.py"
    probe.write_text("def system_prompt_seen(prompts, completions, **columns):\n"
                     "    return [float(p[0]['role'] == 'system' and c[0]['role'] == 'assistant')"
                     " for p, c in zip(prompts, completions)]\n")
    out = tmp_path / "run"
    data = (f"data.train=[{{path: '{verl}', weight: 1}}, "
            f"{{path: '{trl}', weight: 1, columns: {{answer: solution}}}}]")
    rewards = (f"rewards.rewards=[{{name: auto}}, {ACCURACY[:-1]}, completion_format: messages, weight: 0.5}}, "
               "{name: trl.rewards:think_format_reward, completion_format: messages, weight: 0.1}, "
               f"{OVERLONG[:-1]}, weight: 0.1}}, {{name: '{probe}:system_prompt_seen', completion_format: messages,"
               " weight: 0.0}]")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(
        [str(BIN / "dualmode-rl"), "train", "--model", str(tiny_checkpoint), f"train.out={out}", data, rewards,
         "data.reasoning_share=0.5", "train.steps=2", "train.prompts_per_step=4", "rollout.samples_per_prompt=2",
         "rollout.engine=hf", "rollout.reasoning.max_tokens=24", "rollout.non_reasoning.max_tokens=24",
         "train.save_every=2", "rewards.num_workers=1", "train.report_to=[tensorboard, wandb]",
         "train.log_samples_every=1", "train.samples_logged=4"],
        capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]

    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    for name in ("auto", "accuracy_reward", "think_format_reward", "soft_overlong_punishment_reward",
                 "system_prompt_seen"):
        assert all(f"rewards/{name}/error_rate" in m for m in metrics), name
    assert all(m["rewards/system_prompt_seen/mean"] == 1.0 for m in metrics)  # every reward call saw the system turn
    assert all(m["rewards/think_format_reward/error_rate"] == 0.0 for m in metrics)
    assert all(m["rewards/auto/error_rate"] == 0.0 for m in metrics)  # TRL rows have no domain: math by their answer
    assert all(-1.0 <= m["rewards/soft_overlong_punishment_reward/mean"] <= 0.0 for m in metrics)

    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == sorted(s["step"] for s in samples) and {s["step"] for s in samples} == {1, 2}
    # the engine rendered each prompt with its dataset's system prompt: the template's first turn
    starts = {s["prompt"].split("[|endofturn|]")[0] for s in samples}
    assert starts == {f"[|system|]\n{VERL_SYSTEM}", f"[|system|]\n{TRL_SYSTEM}"}
    texts = [v for _, v in _text_events(out / "tensorboard")]
    assert any(VERL_SYSTEM in t for t in texts) and any(TRL_SYSTEM in t for t in texts)
    assert [step for step, _ in scalar_events(out / "tensorboard", "loss")] == [1, 2]

    config, history = _wandb_offline_run(out)
    assert config["train"]["report_to"] == ["tensorboard", "wandb"] and config["rewards"]["rewards"][1]["columns"] == {
        "solution": "answer"}
    assert [h["_step"] for h in history if "loss" in h] == [1, 2]
    for step, row in zip((1, 2), metrics):
        logged = next(h for h in history if h.get("_step") == step and "loss" in h)
        assert logged["reasoning/reward"] == pytest.approx(row["reasoning/reward"]) and "rewards/auto/mean" in logged

    report = subprocess.run([str(BIN / "dualmode-rl"), "report", str(out)], capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    text = (out / "report.md").read_text()
    for panel in ("loss", "entropy", "kl", "grad_norm", "reward"):
        assert f"![{panel}](report_plots/{panel}.png)" in text
    assert "## sample completions" in text and all(f"### {s['mode']}" in text for s in samples)
    assert text.count("\n| 1 | ") + text.count("\n| 2 | ") == len(samples)  # one table row per logged sample


def _text_events(folder: Path) -> list[tuple[int, str]]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [(event.step, value.tensor.string_val[0].decode()) for path in sorted(folder.iterdir())
            for event in EventFileLoader(str(path)).Load() for value in event.summary.value
            if value.tag.startswith("samples/")]


def _wandb_offline_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """The config and history records of the one offline W&B run under RUN/wandb/, read back from its
    transaction log (LevelDB's log format: 32 KiB blocks of records with a 7-byte header; W&B protobufs)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, block, position, buffer = path.read_bytes(), 32768, 7, b""  # after the ":W&B" file header
    config, history = {}, []
    while position + 7 <= len(data):
        if block - position % block < 7:  # a block's tail too short for a header is padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        buffer += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buffer)
            buffer = b""
            if record.WhichOneof("record_type") == "run":
                config.update({i.key: json.loads(i.value_json) for i in record.run.config.update})
            elif record.WhichOneof("record_type") == "history":
                history.append({"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in record.history.item})
    return config, history


class RecordingEngine:
    """A real engine, recording the groups it returns (the prompts it rendered)."""

    def __init__(self, engine):
        self.engine, self.groups = engine, []

    def generate(self, requests, seed=None):
        groups = self.engine.generate(requests, seed=seed)
        self.groups += groups
        return groups


@pytest.mark.slow
def test_eval_renders_each_rows_system_prompt(tmp_path, tiny_checkpoint):
    """`dualmode-rl eval`'s path (load_prompts, build_local_engine, evaluate) on a verl parquet: in both modes the
    engine's prompt opens with the row's system turn."""
    from dualmode_rl.orchestration.components import build_local_engine, build_reward_pool
    from dualmode_rl.orchestration.config import load_config
    from dualmode_rl.orchestration.data import load_prompts
    from dualmode_rl.orchestration.evaluate import evaluate

    cfg = load_config(None, [f"model={tiny_checkpoint}", "rollout.engine=hf", "rollout.reasoning.max_tokens=8",
                             "rollout.non_reasoning.max_tokens=8"])
    dataset = load_prompts(cfg, verl_parquet(tmp_path / "verl.parquet", count=3), "test", need_mode=False)
    engine = RecordingEngine(build_local_engine(cfg, tiny_checkpoint, evaluation=True))
    rewards = build_reward_pool(cfg, evaluation=True)
    try:
        report = evaluate(engine, rewards, dataset, samples=1)
    finally:
        rewards.close()
    assert report["reasoning"]["n"] == report["non_reasoning"]["n"] == 3
    assert [g.mode for g in engine.groups] == ["reasoning"] * 3 + ["non_reasoning"] * 3
    tokenizer = engine.engine.tokenizer
    assert all(tokenizer.decode(g.prompt_token_ids).startswith(f"[|system|]\n{VERL_SYSTEM}[|endofturn|]\n[|user|]\n")
               for g in engine.groups)
