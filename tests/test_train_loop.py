"""The RL loop with real components: vLLM on a Ray actor, rewards, AGAPO learner, checkpoints, resume."""
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tensorboard_events import scalar_events

from dualmode_rl.orchestration.batch_builder import build_batch
from dualmode_rl.orchestration.metrics import rollout_metrics
from dualmode_rl.orchestration.sampler import PromptSampler
from dualmode_rl.rewards.types import RewardInput, RewardOutput
from dualmode_rl.rl import advantages
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


def test_reward_failures_are_left_out_not_trained_as_wrong_answers(tmp_path):
    """A reward that raises on half the samples: those samples leave the batch and the advantage
    statistics, a group whose rewards all failed is dropped, and reward_error_rate counts them."""
    from dualmode_rl.rewards.pool import RewardPool
    from dualmode_rl.rewards.registry import load_reward

    plugin = tmp_path / "flaky.py"
    plugin.write_text("def flaky(completions, **columns):\n"
                      "    if any('odd' in c for c in completions):\n        raise RuntimeError('verifier crashed')\n"
                      "    return [1.0 if 'right' in c else 0.0 for c in completions]\n")
    texts = [["right", "wrong", "right odd", "wrong odd"], ["wrong", "wrong", "right odd", "right odd"],
             ["odd"] * 4, ["right", "wrong", "wrong", "wrong"]]
    groups = [RolloutGroup(str(i), "reasoning", [1, 2], [Sample([3 + i, 10 + j], [-0.5, -0.1], t, "stop")
                                                         for j, t in enumerate(ts)]) for i, ts in enumerate(texts)]
    pool = RewardPool([(load_reward(f"{plugin}:flaky"), 1.0)], num_workers=2, timeout_s=30)
    try:
        outputs = pool.score([RewardInput(s.text, g.mode, {}) for g in groups for s in g.samples])
    finally:
        pool.close()
    assert sum(o.error is not None for o in outputs) == 8 and "verifier crashed" in outputs[2].error
    ref_logprobs = [[float(k)] * 2 for k in range(16)]
    batch, _ = build_batch(groups, outputs, agapo, ref_logprobs=ref_logprobs)
    assert batch.group_ids == [0, 0, 1, 1, 3, 3, 3, 3]  # group 2 (all failed) dropped
    assert batch.completion_ids[:2] == [[3, 10], [3, 11]] and batch.ref_logprobs[2] == [4.0, 4.0]
    # AGAPO on the 8 scored samples: leave-one-out within what is left of each group, then the batch
    loo = [1.0, -1.0, 0.0, 0.0, 1.0, -1 / 3, -1 / 3, -1 / 3]
    mean, std = statistics.mean(loo), statistics.stdev(loo)
    assert batch.advantages == pytest.approx([(v - mean) / (std + 1e-6) for v in loo], abs=1e-6)  # fp32
    assert rollout_metrics(groups, outputs)["reward_error_rate"] == 0.5
    with pytest.raises(RuntimeError, match="every sample's reward failed"):
        build_batch(groups[2:3], outputs[8:12], agapo)


def test_agapo_neg_finds_all_incorrect_groups_by_the_accuracy_reward():
    """A shaping term (arithmetic_steps) lifts every total above 0; the group is still all wrong."""
    groups = [RolloutGroup(str(i), "reasoning", [1], [Sample([2], [-0.5], "t", "stop") for _ in range(2)]) for i in range(2)]
    outputs = [RewardOutput(1.0 + a, extras={"auto": a, "arithmetic_steps": 1.0}) for a in (0.0, 0.0, 1.0, 0.0)]
    by_accuracy, _ = build_batch(groups, outputs, advantages.agapo_neg, accuracy_reward="auto")
    by_total, _ = build_batch(groups, outputs, advantages.agapo_neg)  # no accuracy component: total >= 1 is right
    assert by_accuracy.advantages[0] == by_accuracy.advantages[1] < 0  # all-incorrect: a negative signal
    assert by_total.advantages[:2] == [0.0, 0.0]  # "correct" by the shaped total: no signal


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
    assert f"{STEPS}/{STEPS}" in first.stderr and "step" in first.stderr and "reward: " in first.stderr  # the bar
    assert {"time/rollout", "time/learner", "kl", "entropy"} <= set(json.loads((whole / "metrics.jsonl").read_text().splitlines()[0]))
    assert list((whole / "tensorboard").iterdir())
    # the sampler's log-probs are the learner's up to fp32 rounding (~1e-6) when on-policy; one update
    # stale they are not, and the correction (auto: tis) weighs them
    gaps = [m["mismatch/logprob_abs"] for m in _learning_metrics(whole) if m["rollout/staleness"] == 0]
    assert gaps and max(gaps) < 1e-3, gaps
    assert all(m["off_policy/ratio_max"] > 0 for m in _learning_metrics(whole))

    _kill_mid_run([*train, f"train.out={broken}"], broken)
    assert (broken / "checkpoints" / "latest").read_text() != f"step_{STEPS:06d}"  # killed part-way
    refused = run(*train, f"train.out={broken}")
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = run(*train, f"train.out={broken}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-4000:]

    assert _learning_metrics(broken) == _learning_metrics(whole)
    assert [step for step, _ in scalar_events(broken / "tensorboard", "kl")] == list(range(1, STEPS + 1))  # no killed steps
    assert [m["rollout/staleness"] for m in _learning_metrics(whole)] == staleness
    a, b = _weights(whole, STEPS), _weights(broken, STEPS)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    previous = _weights(whole, (STEPS - 1) // save_every * save_every)  # the checkpoint before the last
    assert any(not a[k].equal(previous[k]) for k in a)  # training moved the weights
    state = json.loads((broken / "checkpoints" / f"step_{STEPS:06d}" / "loop_state.json").read_text())
    assert state["step"] == STEPS and state["sampler"]["position"] == 4 * STEPS % 300


@pytest.mark.slow
def test_a_reward_that_raises_is_logged_written_and_stops_the_run(tmp_path, tiny_checkpoint):
    """The raising reward's error, traceback and row id reach the log and errors.jsonl, per-reward metrics
    (and the verl reward's extras) reach metrics.jsonl, and after rewards.max_failed_steps steps of failing
    on every sample the run stops with one line naming the reward and its error."""
    boom, out = tmp_path / "boom.py", tmp_path / "run"
    boom.write_text('def boom(completions, **columns):\n    raise RuntimeError("boom")\n')
    verl = Path(__file__).resolve().parents[1] / "examples" / "verl_style_reward.py"
    done = run(BIN / "dualmode-rl", "train", "--model", tiny_checkpoint, f"train.out={out}", "train.steps=6",
               "rollout.engine=hf", *SHORT, "rewards.max_failed_steps=2",
               f"rewards.rewards=[{{name: '{verl}:compute_score'}}, {{name: '{boom}:boom', weight: 0.5}}]")
    assert done.returncode == 2, done.stderr[-4000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "dualmode-rl: reward 'boom' failed on every sample for 2 steps in a row (rewards.max_failed_steps=2); its last "
        f"error: RuntimeError: boom (first occurrences with tracebacks: {out / 'errors.jsonl'})")
    assert "reward 'boom' failed on row id" in done.stderr and 'raise RuntimeError("boom")' in done.stderr
    records = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(r["reward"], r["error"]) for r in records] == [("boom", "RuntimeError: boom")]  # the first occurrence only
    assert 'raise RuntimeError("boom")' in records[0]["traceback"] and str(records[0]["id"]).startswith("train-")
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["rewards/boom/error_rate"] == 1.0 and m["rewards/compute_score/error_rate"] == 0.0
        assert 0.0 <= m["rewards/compute_score/has_boxed"] <= 1.0 and 0.0 <= m["rewards/compute_score/mean"] <= 1.0
        assert {f"rewards/boom/error_rate/{g.split('/')[0]}" for g in m if g.endswith("/accuracy")} <= set(m)


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
    # The job's working directory holds the user's own rewards.py (its reward is trained with), rl.py and
    # rollout/: dualmode-rl's modules live under dualmode_rl, so none of them is shadowed (importing the
    # user's rl or rollout would fail the job).
    job_dir = tmp_path / "job"
    (job_dir / "rollout").mkdir(parents=True)
    (job_dir / "rewards.py").write_text("def has_box(completions, **columns):\n    return [float('boxed' in c) for c in completions]\n")
    for module in ("rl.py", "rollout/__init__.py"):
        (job_dir / module).write_text("raise ImportError('the user module was imported instead of dualmode_rl')\n")
    try:
        out = tmp_path / "job_run"
        job = run(ray, "job", "submit", f"--address=http://127.0.0.1:{dash}", "--working-dir", job_dir, "--",
                  BIN / "dualmode-rl", "train", "--model", tiny_checkpoint, f"train.out={out}", "train.steps=1", *SHORT,
                  "rewards.rewards=[{name: auto}, {name: rewards.py:has_box, weight: 0.1}]", env=env, timeout=900)
        assert job.returncode == 0, (job.stdout + job.stderr)[-4000:]
        assert "succeeded" in (job.stdout + job.stderr).lower()
        assert "connected to Ray cluster" in job.stdout + job.stderr
        assert (out / "checkpoints" / "latest").read_text() == "step_000001"
        assert json.loads((out / "metrics.jsonl").read_text())["rewards/has_box/error_rate"] == 0.0
    finally:
        run(ray, "stop", "--force", env=env, timeout=120)
        shutil.rmtree(tmp_path / "job_run", ignore_errors=True)
