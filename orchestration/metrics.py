"""Metrics: JSON lines plus TensorBoard, per mode."""
from __future__ import annotations

import json
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from statistics import mean

from dualmode_rl.rewards.types import RewardOutput
from dualmode_rl.rl.advantages import CORRECT_THRESHOLD
from dualmode_rl.rollout.types import RolloutGroup

METRICS_FILE = "metrics.jsonl"


def is_correct(output: RewardOutput, accuracy_reward: str | None) -> bool:
    """`accuracy_reward`'s own score >= 1 when the pool has that component (eval.reward), else the total's."""
    return output.component(accuracy_reward) >= CORRECT_THRESHOLD


def rollout_metrics(groups: list[RolloutGroup], outputs: list[RewardOutput], accuracy_reward: str | None = None) -> dict:
    """reward, accuracy, response length, truncation and all-correct/all-wrong group rates, per mode.

    Correct means `accuracy_reward`'s own score >= 1 when the pool has that component (eval.reward),
    so shaping terms added to the total (arithmetic_steps) do not count as accuracy; else the total."""
    per_mode: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    it = iter(outputs)
    for g in groups:
        outs = [next(it) for _ in g.samples]
        correct = [is_correct(o, accuracy_reward) for o in outs]
        m = per_mode[g.mode]
        m["reward"] += [o.score for o in outs]
        m["accuracy"] += correct
        m["response_length"] += [len(s.token_ids) for s in g.samples]
        m["truncated"] += [s.finish_reason == "length" for s in g.samples]
        m["group_all_correct"].append(all(correct))
        m["group_all_wrong"].append(not any(correct))
    flat = {f"{mode}/{key}": float(mean(values)) for mode, m in per_mode.items() for key, values in m.items()}
    flat["reward_error_rate"] = float(mean(o.error is not None for o in outputs))
    return flat


class MetricsLogger:
    def __init__(self, run_dir: Path, keep_until_step: int | None = None):
        self.path = run_dir / METRICS_FILE
        if keep_until_step is not None and self.path.exists():  # resume: drop steps after the checkpoint
            kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= keep_until_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        from torch.utils.tensorboard import SummaryWriter

        self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        for key, value in metrics.items():
            self.tensorboard.add_scalar(key, value, step)
        self.tensorboard.flush()

    def close(self) -> None:
        self.tensorboard.close()


class StageTimer:
    """`with timer("rollout"): ...` accumulates wall seconds per stage as `time/<stage>`."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            key = f"time/{stage}"
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - start
