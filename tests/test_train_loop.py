"""The RL loop with real components: vLLM on a Ray actor, rewards, AGAPO learner, checkpoints, resume."""
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tensorboard_events import scalar_events

from dualmode_rl.orchestration.batch_builder import build_batch
from dualmode_rl.orchestration.dynamic_sampling import DynamicSampling
from dualmode_rl.orchestration.metrics import rollout_metrics
from dualmode_rl.orchestration.rollout_ahead import RolloutAhead
from dualmode_rl.orchestration.sampler import PromptSampler
from dualmode_rl.orchestration.step import rollout_seed
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


class ScriptedRollout:
    """Stands in for the rollout pool in the dynamic-sampling unit test: a prompt names its samples' texts."""

    def __init__(self):
        self.seeds: list[int] = []

    def submit(self, requests, seed=None):
        self.seeds.append(seed)
        groups = [RolloutGroup(r.request_id, r.mode, [1, 2], [  # token: 100 x the row id + the sample's index
            Sample([100 * int(r.request_id.split(":")[0]) + j], [-0.5], text, "stop")
            for j, text in enumerate(r.prompt[-1]["content"].split()[:r.n])]) for r in requests]
        return type("Pending", (), {"result": lambda self: groups})()


# The sampler's order of 12 prompts, scripted: the first round (4 prompts) holds two all-equal groups;
# the refill round draws deficit 2 / keep rate 2/4 = 4 more, one all-equal, so five mixed: one unused.
SCRIPT = [("right wrong", "reasoning"), ("right right", "reasoning"), ("wrong wrong", "non_reasoning"),
          ("wrong right", "non_reasoning"), ("wrong wrong", "reasoning"), ("right wrong", "reasoning"),
          ("right wrong", "non_reasoning"), ("wrong right", "reasoning")] + [("right wrong", "reasoning")] * 4


def test_dynamic_sampling_refills_all_equal_groups_from_new_prompts_in_step_order(tmp_path):
    from dualmode_rl.rewards.pool import RewardPool
    from dualmode_rl.rewards.registry import load_reward

    plugin = tmp_path / "right.py"
    plugin.write_text("def right(completions, **columns):\n    return [float(c == 'right') for c in completions]\n")
    order = PromptSampler(len(SCRIPT), seed=5).next(len(SCRIPT))
    dataset = [None] * len(SCRIPT)
    for position, index in enumerate(order):
        dataset[index] = {"id": position, "prompt": SCRIPT[position][0], "mode": SCRIPT[position][1]}
    sampler, rollout = PromptSampler(len(SCRIPT), seed=5), ScriptedRollout()
    pool = RewardPool([(load_reward(f"{plugin}:right"), 1.0)], num_workers=1, timeout_s=30)

    def prompts(count):
        return [dataset[i] for i in sampler.next(count)]

    def reference(prompt_ids, completion_ids, modes):  # marks each sample, to follow it through the refill
        return [[float(c[0])] for c in completion_ids]

    refill = DynamicSampling(rollout, pool, samples_per_prompt=2, prompts_per_step=4, max_refill_rounds=2,
                             draw=prompts, seed=7, reference=reference)
    ahead = RolloutAhead(rollout, pool, 2, reference=reference)
    try:
        ahead.submit(3, *(prompts(4), rollout_seed(7, 3)))  # step 3's batch, generated ahead
        scored = ahead.batch(3, lambda step: (prompts(4), rollout_seed(7, step)), prefetch_next=True, complete=refill)
        ahead.wait(4)
        step4 = ahead.take(4)
    finally:
        ahead.close()
        pool.close()
    trained = scored.trained()
    assert [g.request_id for g in trained.groups] == ["0:reasoning", "3:non_reasoning", "5:reasoning", "6:non_reasoning"]
    assert len(scored.groups) == 8 and [g.request_id.split(":")[0] for g in step4.groups] == ["8", "9", "10", "11"]
    assert rollout.seeds == [rollout_seed(7, 3), rollout_seed(7, 3, 1), rollout_seed(7, 4)]  # refill, then step 4
    assert sampler.state() == {"epoch": 1, "position": 0}  # what the checkpoint keeps: all 12 drawn
    assert trained.ref_logprobs == [[0.0], [1.0], [300.0], [301.0], [500.0], [501.0], [600.0], [601.0]]
    assert [o.score for o in trained.outputs] == [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]
    assert scored.counts == {"dynamic_sampling/rounds": 1.0, "dynamic_sampling/prompts": 8.0,
                             "dynamic_sampling/unused": 1.0, "dynamic_sampling/kept/reasoning": 2.0,
                             "dynamic_sampling/kept/non_reasoning": 2.0, "dynamic_sampling/dropped/reasoning": 2.0,
                             "dynamic_sampling/dropped/non_reasoning": 1.0}
    assert scored.seconds["time/refill"] > 0 and "time/rollout_wait" in scored.seconds
    batch, _ = build_batch(trained.groups, trained.outputs, agapo)
    assert len(batch) == 8 and all(a != 0 for a in batch.advantages)  # every kept group carries signal


def test_dynamic_sampling_with_nothing_to_keep_trains_on_the_first_round(tmp_path):
    from dualmode_rl.rewards.pool import RewardPool
    from dualmode_rl.rewards.registry import load_reward
    from dualmode_rl.orchestration.step import collect

    plugin = tmp_path / "right.py"
    plugin.write_text("def right(completions, **columns):\n    return [float(c == 'right') for c in completions]\n")
    rows = [{"id": i, "prompt": "wrong wrong", "mode": "reasoning"} for i in range(6)]
    drawn = iter(rows[2:])
    pool, rollout = RewardPool([(load_reward(f"{plugin}:right"), 1.0)], num_workers=1), ScriptedRollout()
    refill = DynamicSampling(rollout, pool, 2, 2, max_refill_rounds=1, draw=lambda n: [next(drawn) for _ in range(n)],
                             seed=0)
    try:
        scored = refill(1, collect(rollout, pool, 2, rows[:2], seed=rollout_seed(0, 1)))
    finally:
        pool.close()
    assert scored.kept == [0, 1] and len(scored.groups) == 4  # one round of 2 (B, none kept), then the first round
    assert scored.counts["dynamic_sampling/kept/reasoning"] == 0 and scored.counts["dynamic_sampling/dropped/reasoning"] == 4


def test_best_checkpoint_is_the_first_with_the_highest_eval_accuracy_and_the_report_names_it(tmp_path):
    from dualmode_rl.orchestration.report import write_report
    from dualmode_rl.orchestration.train_eval import best_checkpoint

    rows = [{"step": s, "reasoning/accuracy": 0.5} for s in range(1, 7)]
    for step, (r, n) in {2: (0.5, 0.3), 4: (0.6, 0.4), 6: (0.7, 0.3)}.items():
        rows[step - 1].update({"eval/reasoning/accuracy": r, "eval/non_reasoning/accuracy": n, "eval/accuracy": (r + n) / 2})
    best = best_checkpoint(rows)
    assert (best["step"], best["checkpoint"]) == (4, "checkpoints/step_000004")  # 0.5 at steps 4 and 6: the first
    assert best_checkpoint(rows[:1]) is None
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = write_report(tmp_path).read_text()
    assert ("Best checkpoint (train.eval_every): `checkpoints/step_000004`, step 4, eval accuracy 0.500 "
            "(reasoning 0.600, non_reasoning 0.400).") in text
    assert (tmp_path / "report_plots" / "eval_accuracy.png").stat().st_size > 1000


def _weights(run_dir: Path, step: int) -> dict:
    return load_file(run_dir / "checkpoints" / f"step_{step:06d}" / "policy" / "model.safetensors")


def _learning_metrics(run_dir: Path) -> list[dict]:
    """Everything but wall-clock timings, which differ between any two runs."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k not in ("step_time_s", "eval/time_s")}
            for r in rows]


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


# A reward all equal on a quarter of the prompts (by their length) and nearly always mixed on the rest
# (a checksum of the text), so dynamic sampling drops and refills groups in every run.
SHAPED_REWARD = ("def shaped(completions, prompts, **columns):\n"
                 "    return [1.0 if len(str(p)) % 4 == 0 else sum(map(ord, c)) % 997 / 997\n"
                 "            for c, p in zip(completions, prompts)]\n")


@pytest.mark.slow
def test_sigkill_and_resume_matches_an_uninterrupted_run(tmp_path, tiny_checkpoint):
    """Asynchronous rollout (rollout.max_staleness 1): the step after a checkpoint, and so the first after
    the resume, is generated on-policy (the pipeline drains), as every step of a max_staleness 0 run is;
    the evaluated steps 4 and 8 are checkpointed too; dynamic sampling's refills are generated on the current weights; the demo config with
    a learner group of two ranks (gloo), whose reference log-probs are computed beside the step, half each."""
    save_every, staleness = 3, [0, 1, 1, 0, 0, 1, 0, 1]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    (tmp_path / "shaped.py").write_text(SHAPED_REWARD)
    setup = ["configs/demo.yaml", "learner.num_workers=2", "learner.cpus_per_worker=0.5", "train.eval_every=4",
             "train.eval_limit=3", "eval.samples=2", "algorithm.dynamic_sampling=true",
             f"rewards.rewards=[{{name: '{tmp_path / 'shaped.py'}:shaped'}}]"]
    # The transformers engine: vLLM's CPU batching depends on request arrival timing, so its samples
    # are not reproducible across engine processes even with the sampler reseeded every step.
    train = [BIN / "dualmode-rl", "train", "--model", tiny_checkpoint, *setup, f"train.steps={STEPS}", "rollout.engine=hf",
             *SHORT, "rollout.max_staleness=1", f"train.save_every={save_every}"]
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
    logged = _learning_metrics(whole)
    # a refilled step whose kept groups all come from its refills (on the current weights) is on-policy
    assert all(s <= e for s, e in zip([m["rollout/staleness"] for m in logged], staleness))
    check_refills_and_evals(whole, logged)
    a, b = _weights(whole, STEPS), _weights(broken, STEPS)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    previous = _weights(whole, (STEPS - 1) // save_every * save_every)  # the checkpoint before the last
    assert any(not a[k].equal(previous[k]) for k in a)  # training moved the weights
    state = json.loads((broken / "checkpoints" / f"step_{STEPS:06d}" / "loop_state.json").read_text())
    drawn = sum(m.get("dynamic_sampling/prompts", 4) for m in logged)  # the refills' prompts too
    assert state["step"] == STEPS and state["sampler"]["position"] == drawn % 300 and drawn < 300


def check_refills_and_evals(run_dir: Path, logged: list[dict]) -> None:
    """Dynamic sampling dropped and refilled groups; eval/* at steps 4 and 8, each checkpointed; the best named."""
    from dualmode_rl.orchestration.report import write_report

    kept = [m["dynamic_sampling/kept/reasoning"] + m["dynamic_sampling/kept/non_reasoning"] for m in logged]
    assert all(k <= 4 for k in kept) and sum(m["dynamic_sampling/rounds"] for m in logged) > 0
    assert sum(m["dynamic_sampling/dropped/reasoning"] + m["dynamic_sampling/dropped/non_reasoning"] for m in logged) > 0
    evaluated = [m for m in logged if "eval/accuracy" in m]
    assert [m["step"] for m in evaluated] == [4, 8]
    assert all(0 <= m[f"eval/{mode}/accuracy"] <= 1 for m in evaluated for mode in ("reasoning", "non_reasoning"))
    best = json.loads((run_dir / "best_checkpoint.json").read_text())
    assert best["eval/accuracy"] == max(m["eval/accuracy"] for m in evaluated)
    assert (run_dir / best["checkpoint"] / "policy" / "model.safetensors").is_file()
    assert (run_dir / "checkpoints" / "step_000004").is_dir()  # not a save_every step: saved for its eval
    text = write_report(run_dir).read_text()
    assert f"Best checkpoint (train.eval_every): `{best['checkpoint']}`" in text
    assert "![eval_accuracy]" in text and "![dynamic_sampling]" in text


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
    # the CLI's one-line error (Ray's log monitor may print actor output after it)
    assert [line for line in done.stderr.splitlines() if line.startswith("dualmode-rl: ")][-1] == (
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
