"""The part every reward that owns worker processes shares (the math verifier's pool, the code sandbox)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

Workers = TypeVar("Workers")


class WorkerOwner(Generic[Workers]):
    """Starts its workers on first use, once across threads, and pickles as its settings alone (Ray ships
    rewards to other processes), never as the running workers or the lock."""

    def __init__(self, start: Callable[..., Workers], settings: dict, workers: Workers | None = None):
        self._start, self._settings = start, settings
        self._workers = workers
        self._lock = threading.Lock()

    def __reduce__(self):
        return _rebuild, (type(self), self._settings)

    @property
    def workers(self) -> Workers:
        with self._lock:
            if self._workers is None:
                self._workers = self._start(**self._settings)
            return self._workers

    def close(self) -> None:
        if self._workers is not None:
            self._workers.close()


def _rebuild(cls, settings: dict):
    return cls(**settings)
