"""One RL step: rollout -> rewards -> advantages -> learner step -> weight sync (DESIGN.md, steps 2-6).

`collect` is the first half (scored rollouts), `learn` the second. The loop runs them in turn, or
finishes the next step's batch while this step's `learn` runs (RolloutAhead)."""
from __future__ import annotations

from dataclasses import dataclass, field

from dualmode_rl.rewards.types import RewardOutput
from dualmode_rl.rollout.types import RolloutGroup

from .batch_builder import build_batch, overlong_metrics, reward_inputs
from .data import request_for
from .metrics import StageTimer, rollout_metrics


def rollout_seed(seed: int, step: int, round: int = 0) -> int:
    """The sampling seed of a step's generation, and of its refill rounds (round > 0, dynamic sampling):
    the rollouts of a step depend on (seed, step) only, which exact resume needs."""
    return seed * 1_000_003 + step + round * 1_000_000_007


@dataclass
class ScoredRollout:
    groups: list[RolloutGroup]
    outputs: list[RewardOutput]
    seconds: dict[str, float] = field(default_factory=dict)  # time/<stage> of the stages that made it
    ref_logprobs: list[list[float]] | None = None  # per sample, in build_batch's order, when computed ahead
    kept: list[int] | None = None  # the groups to train on (dynamic sampling); None: all of them
    counts: dict[str, float] = field(default_factory=dict)  # dynamic_sampling/*: how the batch was filled

    def trained(self) -> "ScoredRollout":
        """The groups to train on, with their outputs and reference log-probs."""
        if self.kept is None:
            return self
        starts = [0]
        for g in self.groups:
            starts.append(starts[-1] + len(g.samples))
        samples = [k for i in self.kept for k in range(starts[i], starts[i + 1])]
        return ScoredRollout([self.groups[i] for i in self.kept], [self.outputs[k] for k in samples], self.seconds,
                             None if self.ref_logprobs is None else [self.ref_logprobs[k] for k in samples])


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


def learn(scored: ScoredRollout, rollout, learner, weight_sync, advantage_fn, version: int,
          accuracy_reward: str | None = None, overlong=None) -> dict[str, float]:
    """Takes the learner step on `scored` (its kept groups) and syncs the result to the rollout workers as
    `version` (`weight_sync`: rollout/weight_transfer/sync.py); `accuracy_reward` names the reward component
    that decides accuracy (logged, and agapo_neg's); `overlong` maps a mode to its rl.overlong rule.
    Rollout metrics cover every scored group."""
    timer = StageTimer()
    trained = scored.trained()
    sampled_by = min(s.policy_version for g in trained.groups for s in g.samples)
    logged = {**rollout_metrics(scored.groups, scored.outputs, accuracy_reward), **overlong_metrics(scored.groups, overlong),
              **scored.counts, **scored.seconds,
              "rollout/staleness": float(version - 1 - sampled_by),  # learner updates the samples lag behind
              "rollout/restarts": float(rollout.restarts)}
    if all(o.error is not None for o in trained.outputs):
        return {**logged, "learner/skipped": 1.0}  # nothing scored to learn from; RewardFailureWatch decides whether to stop
    batch, _ = build_batch(trained.groups, trained.outputs, advantage_fn, accuracy_reward, trained.ref_logprobs,
                           overlong)
    with timer("learner"), weight_sync.training():
        learner_metrics = learner.step(batch)
    with timer("weight_sync"):
        weight_sync.update(version)
    return {**logged, **learner_metrics, **timer.seconds,
            "response_tokens": float(sum(len(c) for c in batch.completion_ids))}
