"""DAPO's dynamic sampling (Yu et al. 2025, arXiv 2503.14476, section 3.2): a group whose rewards are
all equal has zero advantage, so it is dropped and the batch is filled from further prompts.

- **What is dropped.** A group whose scored samples share one reward (the reward the advantages see:
  the reward pool's total plus any overlong penalty), whatever the estimator (so agapo_neg's
  all-incorrect groups too, as in DAPO).
- **Refill rounds.** Until B = train.prompts_per_step groups with mixed rewards are kept, or
  `algorithm.max_refill_rounds` rounds are done, each round draws more prompts from the run's
  PromptSampler, generates and scores them. DAPO over-samples: a round draws the deficit scaled up
  by the share of groups kept so far this step, at most B prompts (B when none was kept). Mixed
  groups beyond B are left unused. A batch still short after the last round trains on the groups it
  has; one with no mixed group at all trains on its first round's groups, as without dynamic
  sampling (its `kept` counts are 0).
- **Exact resume.** Refill prompts come from the same sampler, in step order, and round r of step k
  samples with `rollout_seed(seed, k, r)`: a step's rollouts depend on (seed, step) only, and the
  checkpointed sampler position includes what the refills drew.
- **Asynchronous rollout** (`rollout.max_staleness: 1`). The first round is the batch generated ahead,
  one update old. Refills are generated at the step itself, on the current weights, before the next
  step's batch is submitted (so prompts are still drawn in step order). A batch can thus mix samples
  one and zero updates old; each sample carries its own sampler log-probs and policy version, which
  the off-policy correction and `rollout/staleness` use.
- **Logged.** `dynamic_sampling/kept/<mode>` and `dynamic_sampling/dropped/<mode>` (groups, all
  rounds), `dynamic_sampling/rounds`, `dynamic_sampling/prompts` (drawn in all), `dynamic_sampling/unused`
  (mixed groups beyond B), and `time/refill` (the refill rounds' generation, scoring and reference).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from dualmode_rl.rl.overlong import OverlongRule
from dualmode_rl.rollout.types import MODES

from .batch_builder import overlong_penalties
from .metrics import StageTimer
from .step import ScoredRollout, rollout_seed, score, submit


@dataclass
class DynamicSampling:
    rollout: object
    rewards: object
    samples_per_prompt: int
    prompts_per_step: int  # B: the groups a batch is filled to
    max_refill_rounds: int
    draw: Callable[[int], list[dict]]  # the next `count` prompt rows of the run's sampler
    seed: int  # train.seed
    reference: Callable | None = None  # Learner.reference_logprobs, used when the first round has them
    overlong: dict[str, OverlongRule] | None = None

    def __call__(self, step: int, scored: ScoredRollout) -> ScoredRollout:
        """`scored` (step `step`'s first round) refilled: every round's groups, `kept` naming the trained ones."""
        timer = StageTimer()
        first_round, rounds = len(scored.groups), 0
        mixed = self._mixed(scored, start=0)
        while len(mixed) < self.prompts_per_step and rounds < self.max_refill_rounds:
            rounds += 1
            rows = self.draw(self._round_size(len(mixed), len(scored.groups)))
            reference = self.reference if scored.ref_logprobs is not None else None
            with timer("refill"):
                pending = submit(self.rollout, rows, self.samples_per_prompt, rollout_seed(self.seed, step, rounds))
                more = score(pending, self.rewards, rows, reference)
            start = len(scored.groups)
            scored = _joined(scored, more)
            mixed += self._mixed(scored, start)
        kept = mixed[:self.prompts_per_step]
        scored.counts = _counts(scored, mixed, kept, rounds)
        scored.kept = kept or list(range(first_round))
        scored.seconds = {**scored.seconds, "time/refill": timer.seconds.get("time/refill", 0.0)}
        return scored

    def _round_size(self, kept: int, drawn: int) -> int:
        """Prompts for the next round: the deficit over the keep rate so far, at most B."""
        deficit = self.prompts_per_step - kept
        return self.prompts_per_step if kept == 0 else min(self.prompts_per_step, math.ceil(deficit * drawn / kept))

    def _mixed(self, scored: ScoredRollout, start: int) -> list[int]:
        """Indices (from `start`) of the groups whose scored samples have more than one reward."""
        rewards = [None if o.error is not None else o.score + penalty
                   for o, penalty in zip(scored.outputs, overlong_penalties(scored.groups, self.overlong))]
        mixed, offset = [], 0
        for i, group in enumerate(scored.groups):
            distinct = {r for r in rewards[offset:offset + len(group.samples)] if r is not None}
            offset += len(group.samples)
            if i >= start and len(distinct) > 1:
                mixed.append(i)
        return mixed


def _counts(scored: ScoredRollout, mixed: list[int], kept: list[int], rounds: int) -> dict[str, float]:
    dropped = set(range(len(scored.groups))) - set(mixed)
    counts = {"dynamic_sampling/rounds": float(rounds), "dynamic_sampling/prompts": float(len(scored.groups)),
              "dynamic_sampling/unused": float(len(mixed) - len(kept))}
    for mode in MODES:
        counts[f"dynamic_sampling/kept/{mode}"] = float(sum(scored.groups[i].mode == mode for i in kept))
        counts[f"dynamic_sampling/dropped/{mode}"] = float(sum(scored.groups[i].mode == mode for i in dropped))
    return counts


def dynamic_sampling(cfg, rollout, rewards, draw: Callable[[int], list[dict]], reference=None,
                     overlong: dict[str, OverlongRule] | None = None) -> DynamicSampling | None:
    """The configured DynamicSampling (algorithm.dynamic_sampling), or None when it is off."""
    if not cfg.algorithm.dynamic_sampling:
        return None
    return DynamicSampling(rollout, rewards, cfg.rollout.samples_per_prompt, cfg.train.prompts_per_step,
                           cfg.algorithm.max_refill_rounds, draw, cfg.train.seed, reference, overlong)


def _joined(first: ScoredRollout, more: ScoredRollout) -> ScoredRollout:
    """`first`'s groups then `more`'s; timings stay `first`'s (refills are timed as time/refill)."""
    ref = None if first.ref_logprobs is None else first.ref_logprobs + more.ref_logprobs
    return ScoredRollout(first.groups + more.groups, first.outputs + more.outputs, first.seconds, ref)
