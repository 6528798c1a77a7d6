"""RewardPool: the weighted sum of several rewards, scored in parallel under a time limit.

Calls. A reward that takes a batch (native, TRL, the built-ins) is called once with the whole batch;
a verl-style one (`per_sample`) once per sample. Up to `num_workers` calls run at a time, each
allowed `timeout_s` per sample it scores. A hung call's thread cannot be killed and is left behind
(daemon): built-in verifiers never hang because their work runs in killable processes; this guards
plug-ins.

Failures. A sample whose reward raised, hung, returned a bad value (rewards.types.score_problem: a
real number in [0, 1]) or returned no value for it (a batch call must return one per sample) gets 0
for that component with `error` set, counted in `error_counts[name]`; the run goes on. When a batch
call raises, its samples are scored one by one, so the error names the rows that cause it. The first
occurrence of each distinct error of each reward is logged with its traceback and the sample's row
`id`, and appended to `errors_file` (a run's errors.jsonl) when one is given.

The combined output: score = sum of weight x component score; extras[name] = the component's score,
extras[name/key] its extras, extras[name/error] its error when it failed (the pool's key: a plug-in's
own extra named `error` is not kept); `error` and `reason` join the components' ("name: ...").
`reward_metrics` summarises a batch of them per reward and mode.
"""
from __future__ import annotations

import json
import logging
import math
import numbers
import threading
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from dualmode_rl.rewards.types import RewardInput, RewardOutput, score_problem

log = logging.getLogger(__name__)
MAX_DISTINCT_ERRORS = 20  # per reward; a reward that fails in endless new ways is logged that often, then counted
ERROR_KEY = "error"


@dataclass
class _Raised:
    message: str
    traceback: str
    kind: str  # the exception's type and the line that raised it

    @classmethod
    def of(cls, exc: BaseException) -> "_Raised":
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        return cls(f"{type(exc).__name__}: {str(exc)[:300]}", "".join(traceback.format_exception(exc)),
                   type(exc).__name__ + where)


class RewardPool:
    def __init__(self, rewards: list[tuple[object, float]], num_workers: int = 2, timeout_s: float = 10.0,
                 errors_file: str | Path | None = None):
        if not rewards:
            raise ValueError("RewardPool needs at least one reward")
        names = [fn.name for fn, _ in rewards]
        if len(set(names)) != len(names):
            raise ValueError(f"reward names must be unique, got {names}")
        self.rewards, self.num_workers, self.timeout_s = rewards, num_workers, timeout_s
        self.errors_file = Path(errors_file) if errors_file else None
        self.error_counts: Counter = Counter()
        self.last_error: dict[str, str] = {}
        self._seen: dict[str, set] = defaultdict(set)
        self._lock = threading.Lock()

    def score(self, inputs: list[RewardInput]) -> list[RewardOutput]:
        calls = [(r, items) for r, (fn, _) in enumerate(self.rewards) for items in self._call_items(fn, len(inputs))]
        results = self._run(calls, inputs)
        parts: list[list] = [[None] * len(self.rewards) for _ in inputs]
        for call, (r, items) in enumerate(calls):
            for i, (out, raised) in zip(items, results[call]):
                parts[i][r] = self._checked(self.rewards[r][0].name, inputs[i], out, raised)
        return [self._combine(p) for p in parts]

    def _run(self, calls: list[tuple[int, list[int]]], inputs: list[RewardInput]) -> dict[int, list]:
        """Each call (reward index, sample indices) on a thread, `num_workers` at a time, each with
        `timeout_s` per sample: call index -> [(output, _Raised | None)] per sample."""
        results: dict[int, list] = {}
        done = threading.Condition()
        running: dict[int, float] = {}
        pending = list(reversed(range(len(calls))))

        def work(call: int):
            (r, items) = calls[call]
            outputs = self._call(self.rewards[r][0], [inputs[i] for i in items])
            with done:
                if call in running:
                    del running[call]
                    results[call] = outputs
                    done.notify()

        with done:
            while pending or running:
                while pending and len(running) < self.num_workers:
                    call = pending.pop()
                    running[call] = time.monotonic() + self.timeout_s * len(calls[call][1])
                    threading.Thread(target=work, args=(call,), daemon=True, name="reward").start()
                now = time.monotonic()
                for call, deadline in list(running.items()):
                    if deadline <= now:
                        del running[call]
                        error = (f"timeout after {self.timeout_s * len(calls[call][1]):g}s "
                                 f"(rewards.timeout_s={self.timeout_s:g} per sample)")
                        results[call] = [(RewardOutput(0.0, error), None) for _ in calls[call][1]]
                if running:
                    done.wait(max(0.0, min(running.values()) - time.monotonic()))
        return results

    @staticmethod
    def _call_items(fn, n: int) -> list[list[int]]:
        if getattr(fn, "per_sample", False):
            return [[i] for i in range(n)]
        return [list(range(n))] if n else []

    def _call(self, fn, batch: list[RewardInput]) -> list[tuple[object, _Raised | None]]:
        """`fn` on `batch`: (output, the exception when it raised) per sample. A batch call that raises
        is repeated sample by sample, so the error names the rows at fault."""
        try:
            out = fn(batch)
        except Exception as exc:  # noqa: BLE001 - a plug-in may raise anything; it is this sample's error
            raised = _Raised.of(exc)
        else:
            raised = None
        if raised is not None:
            if len(batch) > 1:
                return [self._call(fn, [item])[0] for item in batch]
            return [(RewardOutput(0.0, raised.message), raised)]
        if not isinstance(out, (list, tuple)) or len(out) != len(batch):
            got = f"a list of {len(out)}" if isinstance(out, (list, tuple)) else f"a {type(out).__name__}"
            error = f"returned {got} for a batch of {len(batch)} samples (a batch call must return one value per sample)"
            return [(RewardOutput(0.0, error), None) for _ in batch]
        return [(o, None) for o in out]

    def _checked(self, name: str, item: RewardInput, out, raised: _Raised | None) -> RewardOutput:
        """`out` under the one rule for scores; every error is counted, and its first occurrence recorded."""
        if not isinstance(out, RewardOutput):
            out = RewardOutput(0.0, f"returned {type(out).__name__}, expected RewardOutput")
        elif out.error is None and (problem := score_problem(out.score)):
            out = RewardOutput(0.0, problem, out.extras, out.reason)
        if out.error is None:
            return out
        self._record(name, item, out.error, raised)
        return RewardOutput(0.0, out.error, out.extras, out.reason)

    def _record(self, name: str, item: RewardInput, error: str, raised: _Raised | None) -> None:
        kind = raised.kind if raised else error  # distinct: same message, or same exception type at the same line
        with self._lock:
            self.error_counts[name] += 1
            self.last_error[name] = error
            seen = self._seen[name]
            if kind in seen or len(seen) >= MAX_DISTINCT_ERRORS:
                return
            seen.add(kind)
        row_id = item.reference.get("id") if isinstance(item.reference, dict) else None
        trace = raised.traceback if raised else None
        log.error("reward %r failed on row id %s (%s): %s%s", name, row_id, item.mode, error, f"\n{trace}" if trace else "")
        if len(seen) == MAX_DISTINCT_ERRORS:
            log.error("reward %r: %d distinct errors; further new ones are counted, not logged", name, len(seen))
        if self.errors_file is not None:
            record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "reward": name, "error": error,
                      "traceback": trace, "id": _json_value(row_id), "mode": item.mode, "completion": item.completion[:500]}
            self.errors_file.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, self.errors_file.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def _combine(self, parts: list[RewardOutput]) -> RewardOutput:
        extras, errors, reasons, total = {}, [], [], 0.0
        for (fn, weight), part in zip(self.rewards, parts):
            total += weight * part.score
            extras[fn.name] = part.score
            extras.update({f"{fn.name}/{k}": v for k, v in part.extras.items() if k != ERROR_KEY})
            if part.error:
                extras[f"{fn.name}/{ERROR_KEY}"] = part.error
                errors.append(f"{fn.name}: {part.error}")
            if part.reason:
                reasons.append(f"{fn.name}: {part.reason}" if len(self.rewards) > 1 else part.reason)
        return RewardOutput(total, "; ".join(errors) or None, extras, "; ".join(reasons) or None)

    def close(self) -> None:
        for fn, _ in self.rewards:
            if callable(getattr(fn, "close", None)):
                fn.close()


def _json_value(value):
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _number(value) -> float | None:
    if isinstance(value, numbers.Real) and math.isfinite(value):
        return float(value)
    return None


def reward_metrics(outputs: list[RewardOutput], modes: list[str]) -> dict[str, float]:
    """Per reward component of RewardPool outputs: `rewards/<name>/mean` (over the samples it scored) and
    `rewards/<name>/error_rate`, over all samples and per mode (`.../<mode>`), and the mean of each numeric
    extra as `rewards/<name>/<key>`. A mean with no sample to average is left out, never NaN."""
    names = list(dict.fromkeys(k for o in outputs for k in o.extras if "/" not in k))
    values: dict[str, list[float]] = defaultdict(list)
    for out, mode in zip(outputs, modes):
        for name in names:
            failed = f"{name}/{ERROR_KEY}" in out.extras
            for suffix in ("", f"/{mode}"):
                values[f"rewards/{name}/error_rate{suffix}"].append(float(failed))
                if not failed and (score := _number(out.extras.get(name))) is not None:
                    values[f"rewards/{name}/mean{suffix}"].append(score)
        for key, value in out.extras.items():
            if "/" in key and not key.endswith(f"/{ERROR_KEY}") and (number := _number(value)) is not None:
                values[f"rewards/{key}"].append(number)
    return {key: sum(v) / len(v) for key, v in sorted(values.items()) if v}
