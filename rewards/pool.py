"""RewardPool: the weighted sum of several rewards, each sample scored in parallel with a timeout.

A reward that raises, hangs past `timeout_s` or returns something malformed gives that sample 0
for that component, with `error` set, counted in `error_counts[name]`; the run goes on. A hung
call's thread cannot be killed and is left behind (daemon): built-in verifiers never hang because
their work runs in killable processes; this guards plug-ins.
"""
from __future__ import annotations

import threading
import time
from collections import Counter

from dualmode_rl.rewards.types import RewardInput, RewardOutput


class RewardPool:
    def __init__(self, rewards: list[tuple[object, float]], num_workers: int = 2, timeout_s: float = 10.0):
        if not rewards:
            raise ValueError("RewardPool needs at least one reward")
        names = [fn.name for fn, _ in rewards]
        if len(set(names)) != len(names):
            raise ValueError(f"reward names must be unique, got {names}")
        self.rewards, self.num_workers, self.timeout_s = rewards, num_workers, timeout_s
        self.error_counts: Counter = Counter()

    def score(self, inputs: list[RewardInput]) -> list[RewardOutput]:
        tasks = [(r, i) for r in range(len(self.rewards)) for i in range(len(inputs))]
        results: dict[tuple[int, int], RewardOutput] = {}
        done = threading.Condition()
        running: dict[tuple[int, int], float] = {}
        pending = list(reversed(tasks))

        def work(key):
            fn = self.rewards[key[0]][0]
            try:
                out = fn([inputs[key[1]]])
                if not isinstance(out, list) or len(out) != 1 or not isinstance(out[0], RewardOutput):
                    raise TypeError(f"returned {type(out).__name__}, expected [RewardOutput]")
                result, failed = out[0], False
            except Exception as exc:  # noqa: BLE001
                result, failed = RewardOutput(0.0, f"{type(exc).__name__}: {str(exc)[:300]}"), True
            with done:
                if key in running:
                    del running[key]
                    results[key] = result
                    if failed:
                        self.error_counts[fn.name] += 1
                    done.notify()

        with done:
            while pending or running:
                while pending and len(running) < self.num_workers:
                    key = pending.pop()
                    running[key] = time.monotonic() + self.timeout_s
                    threading.Thread(target=work, args=(key,), daemon=True, name="reward").start()
                if running:
                    now = time.monotonic()
                    for key, deadline in list(running.items()):
                        if deadline <= now:
                            del running[key]
                            name = self.rewards[key[0]][0].name
                            results[key] = RewardOutput(0.0, f"timeout after {self.timeout_s:g}s")
                            self.error_counts[name] += 1
                    if running:
                        done.wait(max(0.0, min(running.values()) - time.monotonic()))
        return [self._combine([results[(r, i)] for r in range(len(self.rewards))]) for i in range(len(inputs))]

    def _combine(self, parts: list[RewardOutput]) -> RewardOutput:
        extras, errors, total = {}, [], 0.0
        for (fn, weight), part in zip(self.rewards, parts):
            total += weight * part.score
            extras[fn.name] = part.score
            extras.update({f"{fn.name}/{k}": v for k, v in part.extras.items()})
            if part.error:
                errors.append(f"{fn.name}: {part.error}" if len(self.rewards) > 1 else part.error)
        return RewardOutput(total, "; ".join(errors) or None, extras)

    def close(self) -> None:
        for fn, _ in self.rewards:
            if callable(getattr(fn, "close", None)):
                fn.close()
