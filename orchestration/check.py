"""`dualmode-rl check CONFIG [overrides]`: a preflight before a long job, with no Ray and no vLLM.

It runs the start-up checks of `dualmode-rl train` (orchestration.preflight), prints each mode's
rendered generation prompt for the first row, generates two samples for each of two prompts with the
transformers engine, scores them with every configured reward under its timeout and ships each reward
through cloudpickle into a fresh process (as Ray must), takes one learner step on them, and round-trips
a checkpoint through a temporary folder. Each check prints `ok` or `FAILED` with the culprit; the exit
code is 1 when any failed. Nothing is written outside the temporary folder.

Samples come from the model itself, not from the dataset's answers: a dataset answer has no sampler
log-probs, so only sampled completions can show that the learner scores the tokens the sampler drew
with the probabilities it drew them (the importance ratio at step 1).
"""
from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from dualmode_rl.rewards.pool import RewardPool
from dualmode_rl.rewards.registry import load_reward
from dualmode_rl.rollout.modes import ModeSampling, SamplingConfig
from dualmode_rl.rollout.types import MODES, RolloutGroup

from .batch_builder import build_batch, reward_inputs
from .checkpoint import LoopState, checkpoint_problem, load_loop_state, save_checkpoint
from .config import DualModeConfig
from .data import default_source, load_prompts, request_for
from .metrics import METRICS_FILE
from .preflight import check_generation_limits, check_model
from .sampler import PromptSampler

CHECK_NEW_TOKENS = 32  # per sample: enough tokens to compare log-probs, short enough for any model on a CPU
SAMPLES_PER_PROMPT = 2  # a group needs two samples for a leave-one-out advantage
# Largest |learner - sampler| log-prob per token that still counts as the same distribution. In fp32 the
# two differ only by summation order (KV-cached decoding vs one forward pass): ~1e-6 relative on logits
# of size ~10, so ~1e-5 nats; a wrong template, temperature or token offset is off by 0.1 nats or more.
# bf16/fp16 keep 8/11 mantissa bits: ~4e-3 relative per rounding, hence the looser bound.
LOGPROB_TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 5e-2}


class CheckFailed(Exception):
    """One check failed; the message names the culprit."""


class Checks:
    def __init__(self):
        self.failed: list[str] = []

    @contextmanager
    def __call__(self, name: str):
        """`with checks(name) as notes:` runs one check; lines added to `notes` are printed under its verdict."""
        started, notes = time.perf_counter(), []
        try:
            yield notes
        except Exception as exc:  # noqa: BLE001 - a check reports any failure and the others still run
            reason = str(exc) if isinstance(exc, CheckFailed) else f"{type(exc).__name__}: {exc}"
            self.failed.append(f"{name}: {reason}")
            print(f"[FAILED] {name}: {reason}", flush=True)
            if not isinstance(exc, CheckFailed) and not _is_user_error(exc):
                traceback.print_exc()
        else:
            print(f"[ok] {name} ({time.perf_counter() - started:.1f} s)", flush=True)
        for line in notes:
            print(f"     {line}", flush=True)


def _is_user_error(exc: Exception) -> bool:
    from .cli import _user_errors

    return isinstance(exc, _user_errors())


def run_check(cfg: DualModeConfig) -> int:
    started = time.perf_counter()
    checks = Checks()
    print(f"dualmode-rl check: model {cfg.model_path}", flush=True)
    ready = {}
    with checks("config, data, model folder, tokenizer and chat template") as notes:
        source = cfg.data.train or default_source(cfg)
        dataset = load_prompts(cfg, source, "train")
        model = check_model(cfg.model_path, probe=dataset[0])
        limit = check_generation_limits(cfg, model.tokenizer, dataset, source)
        notes.append(f"{len(dataset)} prompts from {source}; each fits rollout.max_model_len {limit} with its max_tokens")
        notes += [f"{mode} prompt of row 1: {model.prefixes[mode]!r}" for mode in MODES]
        ready.update(dataset=dataset, tokenizer=model.tokenizer)
    if not ready:
        return _finish(checks, started)
    with checks(f"generation: {SAMPLES_PER_PROMPT} samples for each of 2 prompts (transformers engine)"):
        ready["rows"], ready["groups"] = generate(cfg, ready["dataset"])
    if "groups" not in ready:
        return _finish(checks, started)
    inputs = reward_inputs(ready["groups"], ready["rows"])
    for spec in cfg.rewards.rewards:
        with checks(f"reward {spec.name!r}: scores {len(inputs)} samples and pickles") as notes:
            notes.append(check_reward(cfg, spec.name, inputs))
    with checks("one learner step at step 1: importance ratio 1, KL 0") as notes:
        ready["learner"], summary = learner_step(cfg, ready["groups"], ready["rows"])
        notes.append(summary)
    if "learner" in ready:
        with checks("checkpoint save -> load: weights, optimizer, sampler position, RNG") as notes:
            checkpoint_round_trip(cfg, ready["learner"], ready["tokenizer"], len(ready["dataset"]))
            notes.append("weights, optimizer and scheduler state, step, sampler position and RNG streams came back equal")
    return _finish(checks, started)


def _finish(checks: Checks, started: float) -> int:
    print(f"check took {time.perf_counter() - started:.1f} s", flush=True)
    if checks.failed:
        print(f"dualmode-rl check: {len(checks.failed)} failed: " + " | ".join(checks.failed), file=sys.stderr)
        return 1
    return 0


def generate(cfg: DualModeConfig, dataset) -> tuple[list[dict], list[RolloutGroup]]:
    """The first prompt of each mode (the first two prompts when all share one mode), two samples each, with
    the sampler's log-probs of softmax(logits / T): each mode's training temperature, no top-p or top-k, so
    they are the learner's distribution."""
    from dualmode_rl.rollout.hf_engine import HfEngine

    from .components import max_model_len

    firsts = {}
    for index, mode in enumerate(dataset["mode"]):
        firsts.setdefault(mode, index)
    indices = sorted(firsts.values()) if len(firsts) > 1 else [0, 1][:len(dataset)]
    rows = [dataset[i] for i in indices]
    modes = {mode: ModeSampling(getattr(cfg.rollout, mode).temperature or 1.0, 1.0,
                                min(CHECK_NEW_TOKENS, getattr(cfg.rollout, mode).max_tokens)) for mode in MODES}
    engine = HfEngine(cfg.model_path, SamplingConfig(**modes, seed=cfg.train.seed), max_model_len=max_model_len(cfg),
                      seed=cfg.train.seed, logprobs_mode="processed_logprobs")
    try:
        return rows, engine.generate([request_for(row, n=SAMPLES_PER_PROMPT) for row in rows], seed=cfg.train.seed)
    finally:
        engine.shutdown()


def check_reward(cfg: DualModeConfig, name: str, inputs) -> str:
    """Scores `inputs` under rewards.timeout_s (CheckFailed when every sample errs) and round-trips the reward
    through cloudpickle into a fresh Python process."""
    import cloudpickle

    reward = load_reward(name)
    pool = RewardPool([(reward, 1.0)], num_workers=cfg.rewards.num_workers, timeout_s=cfg.rewards.timeout_s)
    try:
        outputs = pool.score(inputs)
    finally:
        pool.close()
    errors = [o.error for o in outputs if o.error]
    if len(errors) == len(outputs):
        raise CheckFailed(f"failed on every sample: {errors[0]}")
    try:
        payload = cloudpickle.dumps(reward)
    except Exception as exc:  # noqa: BLE001 - whatever cloudpickle raises, Ray would too
        raise CheckFailed(f"cannot be pickled, so Ray cannot ship it: {type(exc).__name__}: {exc}") from None
    code = "import sys, cloudpickle; reward = cloudpickle.loads(sys.stdin.buffer.read()); print(reward.name)"
    loaded = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True, timeout=300)
    if loaded.returncode != 0:
        last = (loaded.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        raise CheckFailed(f"pickles, but a fresh process cannot load it (Ray's workers could not either): {last}")
    scores = [o.score for o in outputs if not o.error]
    return (f"mean score {sum(scores) / len(scores):.3f} over {len(scores)} scored samples, {len(errors)} errors"
            f"{' (first: ' + errors[0] + ')' if errors else ''}; pickled ({len(payload)} bytes) and loaded in a fresh process")


def learner_step(cfg: DualModeConfig, groups: list[RolloutGroup], rows: list[dict]):
    """One step of the in-process Learner on the sampled groups, scored by the configured rewards. At step 1
    the policy is the reference (KL 0) and the sampler's policy (importance ratio 1): the reference's
    log-probs of the samples are the learner's, compared token by token with the sampler's."""
    from dualmode_rl.rl.advantages import get_advantage
    from dualmode_rl.rl.learner import Learner

    from .components import build_reward_pool, overlong_rules
    from .loop import learner_config

    config = learner_config(cfg, cfg.model_path)
    config = replace(config, beta=config.beta or 1e-3)  # the reference is loaded even at beta 0, to measure the KL
    learner = Learner(config)
    pool = build_reward_pool(cfg)
    try:
        outputs = pool.score(reward_inputs(groups, rows))
    finally:
        pool.close()
    advantage_fn = get_advantage(cfg.algorithm.advantage, normalize=cfg.algorithm.normalize)
    batch, _ = build_batch(groups, outputs, advantage_fn, overlong=overlong_rules(cfg))
    learner_logprobs = learner.reference_logprobs(batch.prompt_ids, batch.completion_ids, batch.modes)
    gaps = [abs(a - b) for lp, sp in zip(learner_logprobs, batch.rollout_logprobs) for a, b in zip(lp, sp)]
    metrics = learner.step(batch)
    tolerance = LOGPROB_TOLERANCE.get(config.dtype, 5e-2)
    summary = (f"{len(gaps)} tokens: max |log importance ratio| {max(gaps):.2e}, KL {metrics['kl']:.2e} "
               f"(tolerance {tolerance:g}, {config.dtype}); loss {metrics['loss']:.4f}, grad norm {metrics['grad_norm']:.4f}")
    if max(gaps) > tolerance:
        raise CheckFailed(f"the learner's log-probs of the sampled tokens differ from the sampler's by up to {max(gaps):.3g} "
                          f"nats (ratio {math.exp(max(gaps)):.3f}); tolerance {tolerance:g}; {summary}")
    if abs(metrics["kl"]) > tolerance:
        raise CheckFailed(f"KL to the reference at step 1 is {metrics['kl']:.3g}, not 0; {summary}")
    if not all(math.isfinite(metrics[k]) for k in ("loss", "grad_norm")):
        raise CheckFailed(f"the step's loss or gradient is not finite; {summary}")
    return learner, summary


def checkpoint_round_trip(cfg: DualModeConfig, learner, tokenizer, dataset_size: int) -> None:
    """Saves a checkpoint as training does into a temporary folder and resumes from it as training does: a
    new Learner on the saved policy with the saved training state. Weights, optimizer state, step, sampler
    position and RNG streams must come back equal."""
    from dualmode_rl.rl.learner import Learner

    from .loop import learner_config

    sampler = PromptSampler(dataset_size, cfg.train.seed)
    sampler.next(cfg.train.prompts_per_step)
    with tempfile.TemporaryDirectory(prefix="dualmode-rl-check-") as tmp:
        run_dir = Path(tmp)
        (run_dir / METRICS_FILE).write_text(json.dumps({"step": 1}) + "\n")
        checkpoint = save_checkpoint(run_dir, LoopState(1, sampler.state()), learner, tokenizer, run_dir / METRICS_FILE)
        after_save = _draws()  # the RNG streams as the checkpoint holds them, drawn once
        if problem := checkpoint_problem(checkpoint):
            raise CheckFailed(problem)
        expected = {"weights": {k: v.clone() for k, v in learner.export_weights().items()},
                    "state": copy.deepcopy(learner.state_dict())}
        config = replace(learner.config, model_path=str(checkpoint / "policy"), ref_model_path=cfg.model_path)
        restored = Learner(config)
        restored.load_training_state(checkpoint / "trainer")
        if _draws() != after_save:
            raise CheckFailed("RNG states (Python, NumPy, torch) do not come back equal")
        weights = restored.export_weights()
        if weights.keys() != expected["weights"].keys() or not all(weights[k].equal(v) for k, v in expected["weights"].items()):
            raise CheckFailed("the saved policy weights do not load back equal")
        if not _equal(restored.state_dict(), expected["state"]):
            raise CheckFailed("optimizer, scheduler or step state does not load back equal")
        state = load_loop_state(checkpoint)
        if state.step != 1 or PromptSampler(dataset_size, cfg.train.seed, **state.sampler).next(4) != sampler.next(4):
            raise CheckFailed("the sampler position does not load back: the next prompts differ")


def _draws() -> tuple:
    import random

    import numpy

    return random.random(), float(numpy.random.random()), torch.rand(4).tolist()


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(a.eq(b).all())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b
