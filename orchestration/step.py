"""One RL step: rollout -> rewards -> advantages -> learner step -> weight sync (DESIGN.md, steps 2-6).

`collect` is the first half (scored rollouts), `learn` the second. The loop runs them in turn, or
finishes the next step's batch while this step's `learn` runs (RolloutAhead)."""
from __future__ import annotations

from dataclasses import dataclass, field

from dualmode_rl.rewards.types import RewardOutput
from dualmode_rl.rollout.types import RolloutGroup

from .batch_builder import build_batch, reward_inputs
from .data import request_for
from .metrics import StageTimer, rollout_metrics


@dataclass
class ScoredRollout:
    groups: list[RolloutGroup]
    outputs: list[RewardOutput]
    seconds: dict[str, float] = field(default_factory=dict)  # time/<stage> of the stages that made it
    ref_logprobs: list[list[float]] | None = None  # per sample, in build_batch's order, when computed ahead


def submit(rollout, rows: list[dict], samples_per_prompt: int, seed: int):
    return rollout.submit([request_for(r, n=samples_per_prompt) for r in rows], seed=seed)


def score(pending, rewards, rows: list[dict], reference=None) -> ScoredRollout:
    """Waits for a submitted generation, then scores it; with `reference` (Learner.reference_logprobs)
    also computes the reference's log-probs of the samples."""
    timer = StageTimer()
    with timer("rollout"):
        groups = pending.result()
    with timer("reward"):
        outputs = rewards.score(reward_inputs(groups, rows))
    ref_logprobs = None
    if reference is not None:
        with timer("reference"):
            ref_logprobs = reference([g.prompt_token_ids for g in groups for _ in g.samples],
                                     [s.token_ids for g in groups for s in g.samples],
                                     [g.mode for g in groups for _ in g.samples])
    return ScoredRollout(groups, outputs, timer.seconds, ref_logprobs)


def collect(rollout, rewards, samples_per_prompt: int, rows: list[dict], seed: int) -> ScoredRollout:
    return score(submit(rollout, rows, samples_per_prompt, seed), rewards, rows)


def learn(scored: ScoredRollout, rollout, learner, advantage_fn, version: int,
          accuracy_reward: str | None = None) -> dict[str, float]:
    """Takes the learner step on `scored` and syncs the result to the rollout workers as `version`;
    `accuracy_reward` names the reward component that decides the logged accuracy."""
    timer = StageTimer()
    batch, _ = build_batch(scored.groups, scored.outputs, advantage_fn)
    batch.ref_logprobs = scored.ref_logprobs
    with timer("learner"):
        learner_metrics = learner.step(batch)
    with timer("weight_sync"):
        rollout.load_weights_file(learner.sync_weights_to_file(version), version=version)
    sampled_by = min(s.policy_version for g in scored.groups for s in g.samples)
    return {**rollout_metrics(scored.groups, scored.outputs, accuracy_reward), **learner_metrics, **scored.seconds, **timer.seconds,
            "response_tokens": float(sum(len(c) for c in batch.completion_ids)),
            "rollout/staleness": float(version - 1 - sampled_by),  # learner updates the samples lag behind
            "rollout/restarts": float(rollout.restarts)}

