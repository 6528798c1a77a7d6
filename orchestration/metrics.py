"""Metrics: JSON lines plus TensorBoard, per mode."""
from __future__ import annotations

import json
import shutil
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from statistics import mean

from dualmode_rl.rewards.mode_fidelity import FLAGS_BY_MODE, mode_flags
from dualmode_rl.rewards.pool import reward_metrics
from dualmode_rl.rewards.types import RewardOutput
from dualmode_rl.rl.advantages import CORRECT_THRESHOLD
from dualmode_rl.rollout.types import RolloutGroup

from .atomic import write_text_atomic

METRICS_FILE = "metrics.jsonl"
ERRORS_FILE = "errors.jsonl"  # first occurrences of each reward's errors (rewards.pool)


def is_correct(output: RewardOutput, accuracy_reward: str | None) -> bool:
    """`accuracy_reward`'s own score >= 1 when the pool has that component (eval.reward), else the total's."""
    return output.component(accuracy_reward) >= CORRECT_THRESHOLD


def rollout_metrics(groups: list[RolloutGroup], outputs: list[RewardOutput], accuracy_reward: str | None = None) -> dict:
    """reward, accuracy, response length, truncation, thinking-budget hit and all-correct/all-wrong group rates, per mode.

    Correct means `accuracy_reward`'s own score >= 1 when the pool has that component (eval.reward),
    so shaping terms added to the total (arithmetic_steps) do not count as accuracy; else the total."""
    per_mode: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    it = iter(outputs)
    for g in groups:
        outs = [next(it) for _ in g.samples]
        correct = [is_correct(o, accuracy_reward) for o in outs]
        m = per_mode[g.mode]
        scored = [o.error is None for o in outs]  # a failed reward is no answer, right or wrong (reward_error_rate)
        m["reward"] += [o.score for o, ok in zip(outs, scored) if ok]
        m["accuracy"] += [c for c, ok in zip(correct, scored) if ok]
        m["response_length"] += [len(s.token_ids) for s in g.samples]
        m["truncated"] += [s.finish_reason == "length" for s in g.samples]
        m["budget_hit"] += [s.budget_hit for s in g.samples]  # the thinking budget closed the think block
        m["group_all_correct"].append(all(correct))
        m["group_all_wrong"].append(not any(correct))
    flat = {f"{mode}/{key}": float(mean(values)) for mode, m in per_mode.items() for key, values in m.items() if values}
    flat["reward_error_rate"] = float(mean(o.error is not None for o in outputs))
    return {**flat, **mode_fidelity_metrics(groups), **reward_metrics(outputs, [g.mode for g in groups for _ in g.samples])}


def mode_fidelity_key(flag: str, mode: str) -> str:
    return f"mode_fidelity/{flag}/{mode}"


MODE_FIDELITY_KEYS = [mode_fidelity_key(flag, mode) for mode, flags in FLAGS_BY_MODE.items() for flag in flags]


def mode_fidelity_metrics(groups: list[RolloutGroup]) -> dict[str, float]:
    """The share of each mode's samples raising each of its mode-fidelity flags (rewards.mode_fidelity)."""
    raised: dict[str, list[bool]] = defaultdict(list)
    for g in groups:
        for s in g.samples:
            flags = mode_flags(s.text, g.mode)
            for flag in FLAGS_BY_MODE[g.mode]:
                raised[mode_fidelity_key(flag, g.mode)].append(getattr(flags, flag))
    return {key: float(mean(values)) for key, values in raised.items()}


class MetricsLogger:
    """metrics.jsonl and tensorboard/, both cut back to `keep_until_step` (a resume's checkpoint) on start."""

    def __init__(self, run_dir: Path, keep_until_step: int | None = None):
        self.path = run_dir / METRICS_FILE
        kept: list[dict] = []
        if keep_until_step is not None and self.path.exists():  # resume: drop steps after the checkpoint
            kept = [row for row in map(json.loads, self.path.read_text().splitlines()) if row["step"] <= keep_until_step]
            write_text_atomic(self.path, "".join(json.dumps(row) + "\n" for row in kept))
        self.tensorboard = _fresh_tensorboard(run_dir / "tensorboard", kept)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        for key, value in metrics.items():
            self.tensorboard.add_scalar(key, value, step)
        self.tensorboard.flush()

    def close(self) -> None:
        self.tensorboard.close()


def _fresh_tensorboard(folder: Path, kept: list[dict]):
    """A writer on `folder` holding exactly the `kept` metrics: the event files of the steps a resume drops
    are replaced (events are append-only, and TensorBoard would show both runs' steps). The kept steps are
    written to a new folder first, then swapped in."""
    from torch.utils.tensorboard import SummaryWriter

    if folder.exists():
        staging = folder.with_name(folder.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        with SummaryWriter(str(staging)) as writer:
            for row in kept:
                for key, value in row.items():
                    if key != "step":
                        writer.add_scalar(key, value, row["step"])
        old = folder.with_name(folder.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        folder.rename(old)
        staging.rename(folder)
        shutil.rmtree(old)
    return SummaryWriter(str(folder))


class RewardFailure(RuntimeError):
    """A reward failed on every sample for rewards.max_failed_steps steps in a row."""


class RewardFailureWatch:
    """Stops a run whose reward fails on every sample `max_failed_steps` steps in a row, naming it and its last error."""

    def __init__(self, pool, max_failed_steps: int, errors_file: Path | None = None):
        self.pool, self.max_failed_steps, self.errors_file = pool, max_failed_steps, errors_file
        self.failed_steps: dict[str, int] = defaultdict(int)

    def check(self, metrics: dict[str, float]) -> None:
        for fn, _ in self.pool.rewards:
            failing = metrics.get(f"rewards/{fn.name}/error_rate") == 1.0
            self.failed_steps[fn.name] = self.failed_steps[fn.name] + 1 if failing else 0
            if self.failed_steps[fn.name] >= self.max_failed_steps:
                where = f" (first occurrences with tracebacks: {self.errors_file})" if self.errors_file else ""
                raise RewardFailure(
                    f"reward {fn.name!r} failed on every sample for {self.failed_steps[fn.name]} steps in a row "
                    f"(rewards.max_failed_steps={self.max_failed_steps}); its last error: "
                    f"{self.pool.last_error.get(fn.name)}{where}")


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
