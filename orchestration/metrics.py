"""Metrics, per mode: JSON lines (metrics.jsonl, samples.jsonl) plus the sinks of train.report_to:
TensorBoard and Weights & Biases, two implementations of MetricsSink."""
from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from contextlib import contextmanager
from pathlib import Path
from statistics import mean
from typing import Protocol

from dualmode_rl.atomic import atomic_path, write_text_atomic
from dualmode_rl.constants import CORRECT_THRESHOLD
from dualmode_rl.rewards.mode_fidelity import FLAGS_BY_MODE, mode_flags
from dualmode_rl.rewards.pool import reward_metrics
from dualmode_rl.rewards.types import RewardOutput
from dualmode_rl.rollout.types import RolloutGroup

from .config import DualModeConfig

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"  # sample completions per mode, every train.log_samples_every steps
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


class MetricsSink(Protocol):
    """Where a run's metrics go besides metrics.jsonl: one per entry of train.report_to."""

    def scalars(self, step: int, metrics: dict[str, float]) -> None: ...

    def samples(self, step: int, rows: list[dict]) -> None:
        """A table of sample completions (sample_rows), per mode."""

    def close(self) -> None: ...


class MetricsLogger:
    """metrics.jsonl, samples.jsonl (every train.log_samples_every steps) and the sinks of train.report_to,
    all cut back to `keep_until_step` (a resume's checkpoint) on start. `config`: the run's, which also goes
    to W&B; `tokenizer` decodes the logged samples' prompts as the engine rendered them."""

    def __init__(self, run_dir: Path, keep_until_step: int | None = None, config: DualModeConfig | None = None,
                 tokenizer=None):
        config = config or DualModeConfig()
        self.path, self.samples_path = run_dir / METRICS_FILE, run_dir / SAMPLES_FILE
        kept, kept_samples = (_kept_rows(path, keep_until_step) for path in (self.path, self.samples_path))
        self.train, self.tokenizer = config.train, tokenizer
        self.sinks: list[MetricsSink] = []
        if "tensorboard" in config.train.report_to:
            self.sinks.append(TensorBoardSink(run_dir / "tensorboard", kept, kept_samples))
        if "wandb" in config.train.report_to:
            self.sinks.append(WandbSink(run_dir, config))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        _append(self.path, {"step": step, **metrics})
        for sink in self.sinks:
            sink.scalars(step, metrics)

    def log_samples(self, step: int, groups: list[RolloutGroup], outputs: list[RewardOutput]) -> None:
        """Every train.log_samples_every steps: the first completion of the first train.samples_logged prompts
        of each mode."""
        every = self.train.log_samples_every
        if not every or step % every or self.tokenizer is None:
            return
        rows = sample_rows(groups, outputs, self.tokenizer, self.train.samples_logged)
        for row in rows:
            _append(self.samples_path, {"step": step, **row})
        for sink in self.sinks:
            sink.samples(step, rows)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def sample_rows(groups: list[RolloutGroup], outputs: list[RewardOutput], tokenizer, per_mode: int) -> list[dict]:
    """The first sample of the first `per_mode` groups of each mode: its prompt as rendered (system prompt
    and generation prompt included), completion, reward, each reward's component and any error."""
    rows, taken, start = [], Counter(), 0
    for group in groups:
        if group.samples and taken[group.mode] < per_mode:
            out = outputs[start]
            rows.append({"mode": group.mode, "prompt": tokenizer.decode(group.prompt_token_ids),
                         "completion": group.samples[0].text, "reward": out.score,
                         "rewards": {k: v for k, v in out.extras.items() if "/" not in k}, "error": out.error})
            taken[group.mode] += 1
        start += len(group.samples)
    return rows


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _kept_rows(path: Path, keep_until_step: int | None) -> list[dict]:
    """A resume: `path`'s rows up to the checkpoint's step, the others cut from the file."""
    if keep_until_step is None or not path.exists():
        return []
    kept = [row for row in map(json.loads, path.read_text().splitlines()) if row["step"] <= keep_until_step]
    write_text_atomic(path, "".join(json.dumps(row) + "\n" for row in kept))
    return kept


class TensorBoardSink:
    """tensorboard/: every metric as a scalar, sample completions as text (`samples/<mode>`)."""

    def __init__(self, folder: Path, kept: list[dict], kept_samples: list[dict]):
        self.writer = _fresh_tensorboard(folder, kept, kept_samples)

    def scalars(self, step: int, metrics: dict[str, float]) -> None:
        _write_scalars(self.writer, step, metrics)
        self.writer.flush()

    def samples(self, step: int, rows: list[dict]) -> None:
        _write_samples(self.writer, step, rows)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _write_scalars(writer, step: int, metrics: dict[str, float]) -> None:
    for key, value in metrics.items():
        if key != "step":
            writer.add_scalar(key, value, step)


def _write_samples(writer, step: int, rows: list[dict]) -> None:
    for mode in dict.fromkeys(row["mode"] for row in rows):
        writer.add_text(f"samples/{mode}", samples_markdown([r for r in rows if r["mode"] == mode]), step)


def samples_markdown(rows: list[dict]) -> str:
    """Sample completions as Markdown: each one's reward, then its prompt and completion as code blocks."""
    parts = []
    for row in rows:
        failed = f", error: {row['error']}" if row.get("error") else ""
        parts.append(f"**step {row.get('step', '')} {row['mode']}: reward {row['reward']:.3g}**{failed}\n\n"
                     f"```\n{row['prompt']}\n```\n```\n{row['completion']}\n```")
    return "\n\n".join(parts)


def _fresh_tensorboard(folder: Path, kept: list[dict], kept_samples: list[dict]):
    """A writer on `folder` holding exactly the `kept` metrics and samples: the event files of the steps a
    resume drops are replaced (events are append-only, and TensorBoard would show both runs' steps). The
    kept steps are written to a new folder first, then swapped in."""
    from torch.utils.tensorboard import SummaryWriter

    if folder.exists():
        with atomic_path(folder) as staging, SummaryWriter(str(staging)) as writer:
            for row in kept:
                _write_scalars(writer, row["step"], row)
            for step in dict.fromkeys(row["step"] for row in kept_samples):
                _write_samples(writer, step, [row for row in kept_samples if row["step"] == step])
    return SummaryWriter(str(folder))


class WandbSink:
    """Weights & Biases (the `wandb` extra): the run's config, every metric at its step, sample completions
    as a table. WANDB_MODE=offline writes the run under RUN/wandb/ (`wandb sync` uploads it later). Each
    start or resume of a run is one W&B run, grouped by the run folder; a resume logs from the step after
    its checkpoint."""

    def __init__(self, run_dir: Path, config: DualModeConfig):
        import wandb

        self._wandb = wandb
        self.run = wandb.init(project=config.train.wandb_project, dir=str(run_dir), name=run_dir.name,
                              group=str(run_dir.resolve()), config=config.model_dump(mode="json"),
                              reinit="create_new")

    def scalars(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def samples(self, step: int, rows: list[dict]) -> None:
        columns = ["mode", "prompt", "completion", "reward", "error"]
        table = self._wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])
        self.run.log({"samples": table}, step=step)

    def close(self) -> None:
        self.run.finish()


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
