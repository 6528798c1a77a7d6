"""Process scans for tests. Processes come and go while a scan runs: one that vanished is skipped,
a zombie is reported as a zombie (it has no command line any more), one we may not read keeps an
empty command line. No psutil exception escapes to the test."""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class SeenProcess:
    pid: int
    ppid: int | None
    uid: int | None
    status: str | None
    cmdline: str  # "" for a zombie or a process we may not read

    @property
    def zombie(self) -> bool:
        return self.status == psutil.STATUS_ZOMBIE


def _seen(proc: psutil.Process) -> SeenProcess | None:
    try:
        info = proc.as_dict(["ppid", "uids", "status", "cmdline"], ad_value=None)  # zombie/denied -> None
    except psutil.NoSuchProcess:
        return None
    uids = info["uids"]
    return SeenProcess(proc.pid, info["ppid"], uids.real if uids else None, info["status"],
                       " ".join(info["cmdline"] or []))


def _scan(procs) -> list[SeenProcess]:
    return [seen for seen in map(_seen, procs) if seen is not None]


def descendants() -> list[SeenProcess]:
    """This test process's children, grandchildren, ..."""
    try:
        return _scan(psutil.Process().children(recursive=True))
    except psutil.NoSuchProcess:  # a parent vanished mid-walk: scan again
        return descendants()


def children() -> list[SeenProcess]:
    return _scan(psutil.Process().children())


def everywhere() -> list[SeenProcess]:
    """Every process on the machine."""
    return _scan(psutil.process_iter())


def zombie_descendants() -> list[SeenProcess]:
    return [p for p in descendants() if p.zombie]


def running(text: str, procs: list[SeenProcess]) -> list[SeenProcess]:
    """The live processes whose command line contains `text`."""
    return [p for p in procs if text in p.cmdline and not p.zombie]


def exists(pid: int) -> bool:
    """Whether `pid` is still in the process table, running or as an unreaped zombie."""
    return psutil.pid_exists(pid)


def kill(pid: int) -> bool:
    """SIGKILL `pid`; False if it was already gone."""
    try:
        os.kill(pid, signal.SIGKILL)
        return True
    except ProcessLookupError:
        return False


def wait_until_exited(pid: int, timeout_s: float = 10.0) -> None:
    """Until `pid` is a zombie or gone, without reaping it (reaping is the code under test's job)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)
    raise TimeoutError(f"process {pid} still running {timeout_s} s after SIGKILL")
