"""A trusted helper process that the parent talks to over its stdin/stdout (sandbox_wire framing):
the Math-Verify workers and the code sandbox's zygote servers.

Each runs in its own session, so stopping it SIGKILLs its whole process group. Its pid is reaped
only in `stop()`, never by a liveness check, so the group id cannot be reused by another process
before the kill. Every wait is bounded: a process stuck in uninterruptible sleep after SIGKILL is
kept on a list and reaped by a later start or stop, never waited for forever.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time

from dualmode_rl.rewards.sandbox_wire import recv_message, send_message

log = logging.getLogger(__name__)
REAP_TIMEOUT_S = 10.0

_unreaped: list[subprocess.Popen] = []
_unreaped_lock = threading.Lock()


def _reap_leftovers() -> None:
    with _unreaped_lock:
        _unreaped[:] = [proc for proc in _unreaped if proc.poll() is None]


class ChildProcess:
    """`argv` started with piped stdin/stdout; its first message (`ready`) is awaited."""

    def __init__(self, argv: list[str], ready_timeout_s: float, **popen_kwargs):
        _reap_leftovers()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
                                     **popen_kwargs)
        try:
            self.ready = recv_message(self.proc.stdout.fileno(), time.monotonic() + ready_timeout_s)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def request(self, message: dict, deadline: float):
        send_message(self.proc.stdin.fileno(), message)
        return recv_message(self.proc.stdout.fileno(), deadline)

    def exited(self) -> bool:
        """Whether the process has exited (it is a zombie until `stop()`); does not reap it."""
        if self.proc.returncode is not None:
            return True
        try:
            return os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # reaped by someone else
            return True

    def stop(self) -> None:
        """SIGKILL the process group, close the pipes, reap the process (bounded wait)."""
        if self.proc.returncode is None:  # not reaped yet: its pid is still its group's id
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(REAP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("child process %d still running %.0f s after SIGKILL; it will be reaped later",
                        self.proc.pid, REAP_TIMEOUT_S)
            with _unreaped_lock:
                _unreaped.append(self.proc)
