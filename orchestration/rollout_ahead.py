"""Asynchronous rollout: the next step's batch is generated and scored while this step trains.

With `rollout.max_staleness: 1`, the loop submits step k+1's generation to the rollout actors before
step k's learner update. Ray runs an actor's calls in submission order, so that generation samples
with the weights of step k-1 and the weight sync of step k lands after it: every sample is at most
one update old (one-step off-policy, bounded by construction; `rollout/staleness` logs it). Waiting
for the generation, scoring it and the frozen reference's log-probs of it (exact whenever computed)
happen on a background thread, so all three overlap the update.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

from .step import ScoredRollout, collect, score, submit


class RolloutAhead:
    def __init__(self, rollout, rewards, samples_per_prompt: int, reference=None):
        """`reference`: Learner.reference_logprobs, or None to leave the reference to the learner step."""
        self.rollout, self.rewards, self.samples_per_prompt = rollout, rewards, samples_per_prompt
        self.reference = reference
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="rollout-ahead")
        self._ahead: dict[int, Future] = {}

    def batch(self, step: int, batch_for, prefetch_next: bool, complete=None) -> ScoredRollout:
        """Step `step`'s scored batch: the one generated ahead, else collected now from `batch_for(step)`
        (-> rows, seed), then finished by `complete(step, scored)` when given (dynamic sampling's refills,
        on the current weights). With `prefetch_next`, step+1's batch is submitted before returning, after
        `complete`, so prompts are drawn in step order."""
        scored = self.take(step) or collect(self.rollout, self.rewards, self.samples_per_prompt, *batch_for(step))
        if complete is not None:
            scored = complete(step, scored)
        if prefetch_next:
            self.submit(step + 1, *batch_for(step + 1))
        return scored

    def submit(self, step: int, rows: list[dict], seed: int) -> None:
        pending = submit(self.rollout, rows, self.samples_per_prompt, seed)  # queued on the actors now
        self._ahead[step] = self._executor.submit(score, pending, self.rewards, rows, self.reference)

    def take(self, step: int) -> ScoredRollout | None:
        """The batch submitted for `step`, once scored (None if none was); times the wait as time/rollout_wait."""
        future = self._ahead.pop(step, None)
        if future is None:
            return None
        start = time.perf_counter()
        scored = future.result()
        scored.seconds["time/rollout_wait"] = time.perf_counter() - start
        return scored

    def wait(self, step: int) -> None:
        """Blocks until the batch submitted for `step` is scored."""
        self._ahead[step].exception()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
