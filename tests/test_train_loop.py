"""The RL loop with real components: vLLM on a Ray actor, rewards, AGAPO learner, checkpoints, resume."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from orchestration.batch_builder import build_batch
from orchestration.sampler import PromptSampler
from rewards.types import RewardOutput
from rl.advantages import agapo
from rollout.types import RolloutGroup, Sample

BIN = Path(sys.executable).parent
SHORT = ["train.prompts_per_step=4", "rollout.samples_per_prompt=4", "rollout.reasoning.max_tokens=24",
         "rollout.non_reasoning.max_tokens=24", "train.save_every=1", "rewards.num_workers=1"]


def run(*args, env=None, timeout=900):
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout)


def test_sampler_resumes_mid_epoch():
    whole = PromptSampler(10, seed=3)
    first = whole.next(7) + whole.next(7)
    resumed = PromptSampler(10, seed=3)
    part = resumed.next(7)
    part += PromptSampler(**resumed.state()).next(7)
    assert part == first and sorted(first[:10]) == list(range(10))


def test_batch_builder_lays_out_groups():
    groups = [RolloutGroup(str(i), "reasoning", [1, 2], [Sample([3 + j], [-0.5], "t", "stop") for j in range(3)]) for i in range(2)]
    outputs = [RewardOutput(s) for s in (1.0, 0.0, 0.0, 0.0, 0.0, 0.0)]
    batch, rewards = build_batch(groups, outputs, agapo)
    assert rewards.shape == (2, 3) and batch.group_ids == [0, 0, 0, 1, 1, 1]
    assert batch.advantages[0] > 0 > batch.advantages[1] and batch.advantages[3:] == [batch.advantages[3]] * 3
    assert batch.completion_ids[4] == [4] and batch.prompt_ids[5] == [1, 2]


@pytest.mark.slow
def test_train_resume_and_refuse_to_overwrite(tmp_path, tiny_checkpoint):
    out = tmp_path / "run"
    first = run(BIN / "unirl", "train", "--model", tiny_checkpoint, f"train.out={out}", "train.steps=2", *SHORT)
    assert first.returncode == 0, first.stderr[-4000:]
    assert (out / "checkpoints" / "latest").read_text() == "step_000002"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert {"time/rollout", "time/learner", "kl", "entropy"} <= set(metrics[0])
    assert any(k.startswith("reasoning/") for k in metrics[0]) or any(k.startswith("non_reasoning/") for k in metrics[0])
    assert list((out / "tensorboard").iterdir())

    again = run(BIN / "unirl", "train", "--model", tiny_checkpoint, f"train.out={out}", "train.steps=2", *SHORT)
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = run(BIN / "unirl", "train", "--resume", "--model", tiny_checkpoint, f"train.out={out}", "train.steps=3", *SHORT)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    step2 = load_file(out / "checkpoints" / "step_000002" / "policy" / "model.safetensors")
    step3 = load_file(out / "checkpoints" / "step_000003" / "policy" / "model.safetensors")
    assert any(not step2[k].equal(step3[k]) for k in step2)
    state = json.loads((out / "checkpoints" / "step_000003" / "loop_state.json").read_text())
    assert state["step"] == 3 and state["sampler"]["position"] == 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_job_submit_runs_training(tmp_path, tiny_checkpoint):
    """`ray job submit` against a local `ray start --head` cluster runs a short training to completion."""
    ray = BIN / "ray"
    port, dash = _free_port(), _free_port()
    env = {"RAY_ADDRESS": ""}
    started = run(ray, "start", "--head", f"--port={port}", f"--dashboard-port={dash}", "--num-cpus=2",
                  "--include-dashboard=true", "--disable-usage-stats", env=env, timeout=180)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        out = tmp_path / "job_run"
        job = run(ray, "job", "submit", f"--address=http://127.0.0.1:{dash}", "--",
                  BIN / "unirl", "train", "--model", tiny_checkpoint, f"train.out={out}", "train.steps=1", *SHORT,
                  env=env, timeout=900)
        assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
        assert "succeeded" in (job.stdout + job.stderr).lower()
        assert "connected to Ray cluster" in job.stdout + job.stderr
        assert (out / "checkpoints" / "latest").read_text() == "step_000001"
    finally:
        run(ray, "stop", "--force", env=env, timeout=120)
        shutil.rmtree(tmp_path / "job_run", ignore_errors=True)
