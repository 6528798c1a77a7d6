"""Evaluation during training (`train.eval_every: K`), and the best checkpoint.

- **What.** Pass@1 per mode on the first `train.eval_limit` problems of the test split (`data.test`,
  else the model's bundled or the bootstrap's task suite), scored as `dualmode-rl eval` scores them:
  each mode's eval.* sampling, eval.samples completions per problem (or one greedy), eval.seed, and
  correct means eval.reward's own score >= 1. So `dualmode-rl eval eval.limit=N --model
  <checkpoint>/policy` measures the same thing. Logged as `eval/<mode>/accuracy`, their mean as
  `eval/accuracy`, the wall time as `eval/time_s`.
- **Where.** On the rollout pool's workers, whose weights are the step's (synced at the end of its
  learner step); no second engine. Each call carries the eval sampling, so training's is untouched.
- **When.** Every K-th step and the last. The loop checkpoints those steps, and drains the
  asynchronous pipeline before a checkpoint, so no training generation is in flight: the eval does
  not overlap a rollout, does not enter the step's timings, and resume stays exact.
- **The best checkpoint.** The evaluated step with the highest `eval/accuracy` (the earliest on
  ties), from metrics.jsonl: `best_checkpoint.json` in the run folder, rewritten after each
  checkpoint, and named in `dualmode-rl report`.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from statistics import mean

from dualmode_rl.rollout.types import MODES

from .atomic import write_json_atomic

EVAL_ACCURACY = "eval/accuracy"
BEST_FILE = "best_checkpoint.json"


def best_checkpoint(rows: list[dict]) -> dict | None:
    """The evaluated step with the highest eval/accuracy (earliest on ties), with its eval/*accuracy values."""
    evaluated = [row for row in rows if EVAL_ACCURACY in row]
    if not evaluated:
        return None
    best = max(evaluated, key=lambda row: (row[EVAL_ACCURACY], -row["step"]))
    return {"step": best["step"], "checkpoint": f"checkpoints/step_{best['step']:06d}",
            **{key: value for key, value in best.items() if key.startswith("eval/") and key.endswith("accuracy")}}


class _EvalSampling:
    """The rollout pool as `evaluate`'s generator, sampling with eval.*'s settings."""

    def __init__(self, pool, sampling):
        self.pool, self.sampling = pool, sampling

    def generate(self, requests, seed=None):
        return self.pool.generate(requests, seed, sampling=self.sampling)

    def generate_greedy(self, requests):
        return self.pool.generate_greedy(requests)


class TrainingEval:
    """Does nothing without train.eval_every. Built before any actor starts: it loads and checks the problems."""

    def __init__(self, cfg):
        self.every, self.last_step = cfg.train.eval_every, cfg.train.steps
        if self.every is None:
            return
        from transformers import AutoTokenizer

        from .components import build_reward_pool, sampling_config
        from .data import default_source, load_split
        from .preflight import check_generation_limits

        source = cfg.data.test or default_source(cfg)
        dataset = load_split(source, cfg.eval.split)
        self.dataset = dataset.select(range(min(cfg.train.eval_limit, len(dataset))))
        check_generation_limits(cfg, AutoTokenizer.from_pretrained(cfg.model_path), self.dataset, source,
                                both_modes=True)
        self.sampling = sampling_config(cfg, evaluation=True)
        self.settings = (cfg.eval.samples, cfg.eval.greedy, cfg.eval.seed)
        self.rewards = build_reward_pool(cfg, evaluation=True)

    def due(self, step: int) -> bool:
        return self.every is not None and (step % self.every == 0 or step == self.last_step)

    def run(self, rollout) -> dict[str, float]:
        """eval/* of the weights the rollout workers hold now."""
        from .evaluate import evaluate

        start = time.perf_counter()
        report = evaluate(_EvalSampling(rollout, self.sampling), self.rewards, self.dataset, *self.settings)
        metrics = {f"eval/{mode}/accuracy": report[mode]["accuracy"] for mode in MODES}
        metrics[EVAL_ACCURACY] = mean(metrics.values())
        metrics["eval/time_s"] = time.perf_counter() - start
        return metrics

    def name_best(self, run_dir: Path, metrics_file: Path) -> None:
        """Rewrites best_checkpoint.json from the metrics so far (after a checkpoint, so the best exists)."""
        if self.every is None:
            return
        rows = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
        best = best_checkpoint(rows)
        if best is not None:
            write_json_atomic(run_dir / BEST_FILE, best)

    def close(self) -> None:
        if self.every is not None:
            self.rewards.close()
