"""RewardPool: the weighted sum of several rewards, scored in parallel under a time limit.

Calls. Each reward is handed chunks of up to `batch_size` samples (a verl-style `per_sample` one, one
sample at a time). Up to `num_workers` calls run at a time, each allowed `timeout_s`. A chunk whose
call raises or runs out of time is retried one sample at a time, each with its own `timeout_s`, so
only the samples at fault lose their score, and the error names their rows. A hung call's thread
cannot be killed and is left behind (daemon): built-in verifiers never hang because their work runs in
killable processes; this guards plug-ins. `batch_size=1` calls every reward once per sample, as the
pool did before it batched (benchmarks/reward_pool.py compares the two).

Failures. A sample whose reward raised, hung, returned a bad value (rewards.types.score_problem: a
real number in [0, 1], or in the reward's declared `score_range`) or returned no value for it (a batch
call must return one per sample) gets 0 for that component with `error` set, counted in
`error_counts[name]`; the run goes on. The first occurrence of each distinct error of each reward is
logged with its traceback and the sample's row `id`, and appended to `errors_file` (a run's
errors.jsonl) when one is given.

The combined output: score = sum of weight x component score; extras[name] = the component's score,
extras[name/key] its extras, extras[name/error] its error when it failed (the pool's key: a plug-in's
own extra named `error` is not kept); `error` and `reason` join the components' ("name: ...").
`reward_metrics` summarises a batch of them per reward and mode.
"""
from __future__ import annotations

import itertools
import json
import logging
import math
import numbers
import threading
import time
import traceback
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from dualmode_rl.rewards.types import SCORE_RANGE, RewardInput, RewardOutput, score_problem

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


@dataclass
class _Call:
    reward: int  # index into RewardPool.rewards
    items: list[int]  # sample indices


class RewardPool:
    def __init__(self, rewards: list[tuple[object, float]], num_workers: int = 2, timeout_s: float = 30.0,
                 errors_file: str | Path | None = None, batch_size: int = 64):
        if not rewards:
            raise ValueError("RewardPool needs at least one reward")
        names = [fn.name for fn, _ in rewards]
        if len(set(names)) != len(names):
            raise ValueError(f"reward names must be unique, got {names}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.rewards, self.num_workers, self.timeout_s, self.batch_size = rewards, num_workers, timeout_s, batch_size
        self.errors_file = Path(errors_file) if errors_file else None
        self.error_counts: Counter = Counter()
        self.calls: Counter = Counter()  # per reward: calls made (chunks and single-sample retries)
        self.last_error: dict[str, str] = {}
        self._seen: dict[str, set] = defaultdict(set)
        self._lock = threading.Lock()

    def score(self, inputs: list[RewardInput]) -> list[RewardOutput]:
        parts: list[list] = [[None] * len(self.rewards) for _ in inputs]
        for call, results in self._run(self._chunks(len(inputs)), inputs):
            for i, (out, raised) in zip(call.items, results):
                parts[i][call.reward] = self._checked(self.rewards[call.reward][0], inputs[i], out, raised)
        return [self._combine(p) for p in parts]

    def _chunks(self, n: int) -> list[_Call]:
        calls = []
        for r, (fn, _) in enumerate(self.rewards):
            size = 1 if getattr(fn, "per_sample", False) else self.batch_size
            calls += [_Call(r, list(range(start, min(start + size, n)))) for start in range(0, n, size)]
        return calls

    def _run(self, calls: list[_Call], inputs: list[RewardInput]) -> list[tuple[_Call, list]]:
        """Each call on a thread, `num_workers` at a time, each within `timeout_s`; a chunk that raised or
        timed out comes back as single-sample retries. Returns (call, [(output, _Raised | None)] per sample)."""
        finished: list[tuple[_Call, list]] = []
        done = threading.Condition()
        running: dict[int, tuple[_Call, float]] = {}  # key -> (call, deadline)
        pending = deque(calls)
        keys = itertools.count()

        def work(key: int, call: _Call):
            results = self._call(self.rewards[call.reward][0], [inputs[i] for i in call.items])
            with done:
                if running.pop(key, None) is not None:
                    _settle(call, results)
                    done.notify()

        def _settle(call: _Call, results: list | None) -> None:  # None: it ran out of time
            failed = results is None or any(raised is not None for _, raised in results)
            if failed and len(call.items) > 1:  # retried first, before the chunks still to start
                pending.extendleft(_Call(call.reward, [i]) for i in reversed(call.items))
            elif results is None:
                error = f"timeout after {self.timeout_s:g}s (rewards.timeout_s)"
                finished.append((call, [(RewardOutput(0.0, error), None) for _ in call.items]))
            else:
                finished.append((call, results))

        with done:
            while pending or running:
                while pending and len(running) < self.num_workers:
                    call = pending.popleft()
                    key = next(keys)
                    running[key] = (call, time.monotonic() + self.timeout_s)
                    self.calls[self.rewards[call.reward][0].name] += 1
                    threading.Thread(target=work, args=(key, call), daemon=True, name="reward").start()
                now = time.monotonic()
                for key, (call, deadline) in list(running.items()):
                    if deadline <= now:
                        del running[key]
                        _settle(call, None)
                if running:
                    done.wait(max(0.0, min(deadline for _, deadline in running.values()) - time.monotonic()))
        return finished

    @staticmethod
    def _call(fn, batch: list[RewardInput]) -> list[tuple[object, _Raised | None]]:
        """`fn` on `batch`: (output, the exception when it raised) per sample."""
        try:
            out = fn(batch)
        except Exception as exc:  # noqa: BLE001 - a plug-in may raise anything; it is these samples' error
            raised = _Raised.of(exc)
            return [(RewardOutput(0.0, raised.message), raised) for _ in batch]
        if not isinstance(out, (list, tuple)) or len(out) != len(batch):
            got = f"a list of {len(out)}" if isinstance(out, (list, tuple)) else f"a {type(out).__name__}"
            error = f"returned {got} for a batch of {len(batch)} samples (a batch call must return one value per sample)"
            return [(RewardOutput(0.0, error), None) for _ in batch]
        return [(o, None) for o in out]

    def _checked(self, fn, item: RewardInput, out, raised: _Raised | None) -> RewardOutput:
        """`out` under the one rule for scores; every error is counted, and its first occurrence recorded."""
        if not isinstance(out, RewardOutput):
            out = RewardOutput(0.0, f"returned {type(out).__name__}, expected RewardOutput")
        elif out.error is None and (problem := score_problem(out.score, getattr(fn, "score_range", SCORE_RANGE))):
            out = RewardOutput(0.0, problem, out.extras, out.reason)
        if out.error is None:
            return out
        self._record(fn.name, item, out.error, raised)
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
