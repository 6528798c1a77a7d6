"""The RL loop with real components: vLLM on a Ray actor, rewards, AGAPO learner, checkpoints, resume."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from dualmode_rl.orchestration.batch_builder import build_batch
from dualmode_rl.orchestration.metrics import rollout_metrics
from dualmode_rl.orchestration.sampler import PromptSampler
from dualmode_rl.rewards.types import RewardOutput
from dualmode_rl.rl.advantages import agapo
from dualmode_rl.rollout.types import RolloutGroup, Sample

BIN = Path(sys.executable).parent
STEPS = 8
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
    part += PromptSampler(10, 3, **resumed.state()).next(7)
    assert part == first and sorted(first[:10]) == list(range(10))


def test_batch_builder_lays_out_groups():
    groups = [RolloutGroup(str(i), "reasoning", [1, 2], [Sample([3 + j], [-0.5], "t", "stop") for j in range(3)]) for i in range(2)]
    outputs = [RewardOutput(s) for s in (1.0, 0.0, 0.0, 0.0, 0.0, 0.0)]
    batch, rewards = build_batch(groups, outputs, agapo)
    assert rewards.shape == (2, 3) and batch.group_ids == [0, 0, 0, 1, 1, 1]
    assert batch.advantages[0] > 0 > batch.advantages[1] and batch.advantages[3:] == [batch.advantages[3]] * 3
    assert batch.completion_ids[4] == [4] and batch.prompt_ids[5] == [1, 2]


def test_logged_accuracy_counts_the_accuracy_reward_not_shaping_terms():
    groups = [RolloutGroup("0", "reasoning", [1], [Sample([2], [-0.5], "t", "stop") for _ in range(2)])]
    # auto + arithmetic_steps: a wrong answer with sound steps totals 1.0, yet is not correct
    outputs = [RewardOutput(2.0, extras={"auto": 1.0, "arithmetic_steps": 1.0}),
               RewardOutput(1.0, extras={"auto": 0.0, "arithmetic_steps": 1.0})]
    logged = rollout_metrics(groups, outputs, accuracy_reward="auto")
    assert logged["reasoning/accuracy"] == 0.5 and logged["reasoning/reward"] == 1.5
    assert logged["reasoning/group_all_correct"] == 0.0 and logged["reasoning/group_all_wrong"] == 0.0
    assert rollout_metrics(groups, outputs)["reasoning/accuracy"] == 1.0  # no such component: the total


def test_accuracy_reward_is_found_by_its_spec_also_for_a_plug_in(tmp_path):
    from dualmode_rl.orchestration.components import accuracy_reward_name, build_reward_pool
    from dualmode_rl.orchestration.config import load_config

    plugin = tmp_path / "checks.py"
    plugin.write_text("def answer_check(completions, **columns):\n    return [1.0 for _ in completions]\n")
    rewards = f"rewards.rewards=[{{name: '{plugin}:answer_check'}}, {{name: arithmetic_steps}}]"
    cfg = load_config(None, [rewards, f"eval.reward={plugin}:answer_check"])
    pool = build_reward_pool(cfg)
    assert accuracy_reward_name(cfg, pool) == "answer_check"  # the key the pool's extras use
    assert accuracy_reward_name(load_config(None, [rewards]), pool) is None  # eval.reward "auto" is not trained


def _weights(run_dir: Path, step: int) -> dict:
    return load_file(run_dir / "checkpoints" / f"step_{step:06d}" / "policy" / "model.safetensors")


def _learning_metrics(run_dir: Path) -> list[dict]:
    """Everything but wall-clock timings, which differ between any two runs."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "step_time_s"} for r in rows]


def _kill_mid_run(args: list, run_dir: Path) -> None:
    """SIGKILL the run (and what it started in its session) as soon as any checkpoint exists."""
    proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    pointer = run_dir / "checkpoints" / "latest"
    deadline = time.monotonic() + 600
    while not pointer.is_file():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("max_staleness, save_every, staleness, setup", [
    (0, 1, [0] * STEPS, []),
    # asynchronous: on-policy only right after a checkpoint (drained); the demo config with a learner group
    # of two ranks (gloo), whose reference log-probs are computed beside the step, half each
    (1, 3, [0, 1, 1, 0, 1, 1, 0, 1], ["configs/demo.yaml", "learner.num_workers=2", "learner.cpus_per_worker=0.5"]),
])
def test_sigkill_and_resume_matches_an_uninterrupted_run(tmp_path, tiny_checkpoint, max_staleness, save_every, staleness,
                                                         setup):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    # The transformers engine: vLLM's CPU batching depends on request arrival timing, so its samples
    # are not reproducible across engine processes even with the sampler reseeded every step.
    train = [BIN / "dualmode-rl", "train", "--model", tiny_checkpoint, *setup, f"train.steps={STEPS}", "rollout.engine=hf", *SHORT,
             f"rollout.max_staleness={max_staleness}", f"train.save_every={save_every}"]
    first = run(*train, f"train.out={whole}")
    assert first.returncode == 0, first.stderr[-4000:]
    assert [m["step"] for m in _learning_metrics(whole)] == list(range(1, STEPS + 1))
    assert {"time/rollout", "time/learner", "kl", "entropy"} <= set(json.loads((whole / "metrics.jsonl").read_text().splitlines()[0]))
    assert list((whole / "tensorboard").iterdir())

    _kill_mid_run([*train, f"train.out={broken}"], broken)
    assert (broken / "checkpoints" / "latest").read_text() != f"step_{STEPS:06d}"  # killed part-way
    refused = run(*train, f"train.out={broken}")
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = run(*train, f"train.out={broken}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-4000:]

    assert _learning_metrics(broken) == _learning_metrics(whole)
    assert [m["rollout/staleness"] for m in _learning_metrics(whole)] == staleness
    a, b = _weights(whole, STEPS), _weights(broken, STEPS)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    previous = _weights(whole, (STEPS - 1) // save_every * save_every)  # the checkpoint before the last
    assert any(not a[k].equal(previous[k]) for k in a)  # training moved the weights
    state = json.loads((broken / "checkpoints" / f"step_{STEPS:06d}" / "loop_state.json").read_text())
    assert state["step"] == STEPS and state["sampler"]["position"] == 4 * STEPS % 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_job_submit_runs_training(tmp_path, tiny_checkpoint):
    """`ray job submit` against a local `ray start --head` cluster runs a short training to completion."""
    ray = BIN / "ray"
    port, dash = _free_port(), _free_port()
    # A local ray.init() earlier on this machine leaves ~/.ray/auth_token, after which `ray start` turns
    # token auth on; `ray job submit` sends the token only in token mode.
    env = {"RAY_ADDRESS": "", "RAY_AUTH_MODE": "token"}
    started = run(ray, "start", "--head", f"--port={port}", f"--dashboard-port={dash}", "--num-cpus=2",
                  "--include-dashboard=true", "--disable-usage-stats", env=env, timeout=180)
    assert started.returncode == 0, started.stderr[-3000:]
    try:
        out = tmp_path / "job_run"
        job = run(ray, "job", "submit", f"--address=http://127.0.0.1:{dash}", "--",
                  BIN / "dualmode-rl", "train", "--model", tiny_checkpoint, f"train.out={out}", "train.steps=1", *SHORT,
                  env=env, timeout=900)
        assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
        assert "succeeded" in (job.stdout + job.stderr).lower()
        assert "connected to Ray cluster" in job.stdout + job.stderr
        assert (out / "checkpoints" / "latest").read_text() == "step_000001"
    finally:
        run(ray, "stop", "--force", env=env, timeout=120)
        shutil.rmtree(tmp_path / "job_run", ignore_errors=True)
