"""Killable Math-Verify workers: a few persistent processes, each parse+verify under a wall-clock
limit (the parent kills and replaces a worker that overruns) and a memory limit (RLIMIT_AS).

Math-Verify's own timeouts use signal.alarm, which fails off the main thread and misbehaves in
Ray actors, so they are switched off (`parsing_timeout=None`, `timeout_seconds=None`) and the
process boundary does the timing instead.
"""
from __future__ import annotations

import logging
import os
import queue
import resource
import sys
import threading
import time

from dualmode_rl.rewards.child_process import ChildProcess
from dualmode_rl.rewards.sandbox_wire import WireError, WireTimeout, recv_message, send_message

log = logging.getLogger(__name__)


def _configs(names):
    from math_verify import ExprExtractionConfig, LatexExtractionConfig
    if names is None or names == "parse_default":
        return [LatexExtractionConfig(), ExprExtractionConfig()]
    table = {"latex": LatexExtractionConfig, "expr": ExprExtractionConfig,
             "latex_boxed": lambda: LatexExtractionConfig(boxed_match_priority=0)}
    return [table[n]() for n in names]


def _equal(request: dict) -> bool:
    from math_verify import parse, verify
    gold = parse(request["gold"], extraction_config=_configs(request.get("gold_extraction")),
                 parsing_timeout=None)
    pred = parse(request["pred"], extraction_config=_configs(request.get("pred_extraction")),
                 parsing_timeout=None)
    return bool(verify(gold, pred, float_rounding=request.get("float_rounding", 6),
                       strict=request.get("strict", True),
                       allow_set_relation_comp=request.get("allow_set_relation_comp", False),
                       timeout_seconds=None))


def serve(memory_bytes: int) -> None:
    import logging
    logging.disable(logging.WARNING)  # "timeout is disabled" notices: we time out from outside
    requests, replies = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    import math_verify  # noqa: F401 - import before the memory limit and the first request
    _equal({"gold": "$1$", "pred": "$1$"})  # warm the latex grammar
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    send_message(replies, {"ready": True})
    while True:
        try:
            request = recv_message(requests)
        except (EOFError, OSError):
            return
        try:
            reply = {"equal": _equal(request)}
        except MemoryError:
            reply = {"error": "memory limit"}
        except Exception as exc:  # noqa: BLE001
            reply = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        send_message(replies, reply)


def _start_worker(memory_bytes: int) -> ChildProcess:
    code = "from dualmode_rl.rewards.math_worker import serve; serve(%d)" % memory_bytes
    return ChildProcess([sys.executable, "-c", code], ready_timeout_s=120)


class MathVerifyPool:
    """`equal(pred, gold, ...)` -> (bool, error); thread-safe; `num_procs` checks at a time."""

    def __init__(self, num_procs: int = 1, timeout_s: float = 5.0, memory_bytes: int = 3 << 30):
        self.timeout_s, self.memory_bytes = timeout_s, memory_bytes
        self._idle: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(num_procs)
        self._closed = False
        self.restarts = 0

    def equal(self, pred: str, gold: str, **options) -> tuple[bool, str | None]:
        with self._slots:
            worker = self._take_worker()
            try:
                reply = worker.request({"pred": pred, "gold": gold, **options}, time.monotonic() + self.timeout_s)
            except (WireTimeout, EOFError, WireError, OSError) as exc:
                worker.stop()
                self.restarts += 1
                reason = "timeout" if isinstance(exc, WireTimeout) else f"worker died: {exc}"
                return False, f"math verify {reason}"
            self._give_back(worker)
        if "error" in reply:
            return False, f"math verify error: {reply['error']}"
        return bool(reply.get("equal")), None

    def _take_worker(self) -> ChildProcess:
        """An idle worker, or a new one; a worker that died while idle is reaped and replaced, costing no answer."""
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return _start_worker(self.memory_bytes)
            if not worker.exited():
                return worker
            log.warning("math verify worker (pid %d) died while idle; starting a new one", worker.pid)
            worker.stop()
            self.restarts += 1

    def _give_back(self, worker: ChildProcess) -> None:
        if self._closed:
            worker.stop()
        else:
            self._idle.put(worker)

    def close(self) -> None:
        self._closed = True
        while True:
            try:
                self._idle.get_nowait().stop()
            except queue.Empty:
                return
