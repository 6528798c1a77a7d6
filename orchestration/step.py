"""One RL step: rollout -> rewards -> advantages -> learner step -> weight sync (DESIGN.md, steps 2-6)."""
from __future__ import annotations

from .batch_builder import build_batch, reward_inputs
from .data import request_for
from .metrics import StageTimer, rollout_metrics


def rl_step(rollout, rewards, learner, advantage_fn, rows: list[dict], samples_per_prompt: int,
            version: int, seed: int) -> dict[str, float]:
    """Runs the step on `rows`; the rollout workers end at policy `version`. Returns the step's metrics."""
    timer = StageTimer()
    with timer("rollout"):
        groups = rollout.generate([request_for(r, n=samples_per_prompt) for r in rows], seed=seed)
    with timer("reward"):
        outputs = rewards.score(reward_inputs(groups, rows))
    batch, _ = build_batch(groups, outputs, advantage_fn)
    with timer("learner"):
        learner_metrics = learner.step(batch)
    with timer("weight_sync"):
        rollout.update_weights(learner.export_weights(), version=version)
    return {**rollout_metrics(groups, outputs), **learner_metrics, **timer.seconds,
            "response_tokens": float(sum(len(c) for c in batch.completion_ids))}
