"""Parent side of the code sandbox: a few zygote servers (rewards.sandbox_server), one job each
at a time. A zygote that dies or stops answering is killed and replaced."""
from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dualmode_rl.rewards.child_process import ChildProcess
from dualmode_rl.rewards.sandbox_jail import SAFE_ENV, Limits
from dualmode_rl.rewards.sandbox_wire import WireError, WireTimeout

log = logging.getLogger(__name__)
_UID_BASE = 1_500_000_000  # unprivileged uids with no passwd entry; one per live zygote
_isolation_logged = False
_log_lock = threading.Lock()


@dataclass
class SandboxJob:
    program: str
    mode: str = "function"  # "function": test code with asserts; "stdio": stdin -> expected stdout
    test_code: str | None = None
    entry_point: str | None = None
    stdin: str = ""
    expected_stdout: str | None = None


@dataclass
class SandboxResult:
    passed: list[bool]
    error: str | None = None
    seconds: float = 0.0
    stderr_tail: str = ""
    isolation: dict = field(default_factory=dict)

    @property
    def all_passed(self) -> bool:
        return bool(self.passed) and all(self.passed) and self.error is None


def _log_isolation_once(ready: dict, result: dict) -> None:
    global _isolation_logged
    with _log_lock:
        if _isolation_logged or "isolation" not in result:
            return
        _isolation_logged = True
    iso = result["isolation"]
    if ready.get("network_isolated") and iso.get("pid_namespace"):
        log.info("code sandbox: network, pid and mount namespaces, unprivileged uid, rlimits")
    else:
        log.warning("code sandbox: reduced isolation (network namespace: %s, pid namespace: %s, root: %s);"
                    " untrusted code keeps rlimits, its own session, a scrubbed env and wall-clock kills",
                    ready.get("network_isolated"), iso.get("pid_namespace"), iso.get("root"))


def _start_zygote(base_dir: str, once: bool) -> ChildProcess:
    code = "import sys; from dualmode_rl.rewards.sandbox_server import main; main(sys.argv[1:])"
    return ChildProcess([sys.executable, "-I", "-c", code] + (["--once"] if once else []), ready_timeout_s=60,
                        cwd=base_dir, env=dict(SAFE_ENV))


def _uid_for(zygote: ChildProcess) -> int:
    return _UID_BASE + zygote.pid % 1_000_000


class Sandbox:
    """Runs untrusted programs against tests; thread-safe; `num_workers` jobs at a time.

    persistent=False starts a fresh interpreter per job (same isolation, no zygote): the
    benchmark's comparison point."""

    def __init__(self, num_workers: int = 2, timeout_s: float = 10.0, limits: Limits | None = None,
                 persistent: bool = True):
        self.timeout_s, self.persistent = timeout_s, persistent
        self.limits = limits or Limits(cpu_seconds=int(timeout_s) + 1)
        self.base_dir = tempfile.mkdtemp(prefix="dualmode-rl-sandbox-")
        os.chmod(self.base_dir, 0o700)
        self._idle: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(num_workers)
        self._executor = ThreadPoolExecutor(num_workers, thread_name_prefix="sandbox")
        self._closed = False

    def run(self, job: SandboxJob) -> SandboxResult:
        with self._slots:
            zygote = self._take_zygote()
            job_dir = tempfile.mkdtemp(dir=self.base_dir)
            try:
                reply = zygote.request(self._job_message(job, job_dir, _uid_for(zygote)),
                                       time.monotonic() + self.timeout_s + 15)
                _log_isolation_once(zygote.ready, reply)
            except (WireTimeout, EOFError, WireError, OSError) as exc:
                zygote.stop()
                zygote = None
                reply = {"passed": [], "error": f"sandbox server failed: {type(exc).__name__} {exc}"}
            finally:
                shutil.rmtree(job_dir, ignore_errors=True)
                self._give_back(zygote)
        return SandboxResult(passed=[bool(p) for p in reply.get("passed", [])], error=reply.get("error"),
                             seconds=float(reply.get("seconds", 0.0)), stderr_tail=reply.get("stderr_tail", ""),
                             isolation=reply.get("isolation", {}))

    def run_many(self, jobs: list[SandboxJob]) -> list[SandboxResult]:
        return list(self._executor.map(self.run, jobs))

    def _job_message(self, job: SandboxJob, job_dir: str, uid: int) -> dict:
        tests_path = os.path.join(job_dir, "tests.json")
        tests = ({"expected_stdout": job.expected_stdout} if job.mode == "stdio"
                 else {"test_code": job.test_code})
        fd = os.open(tests_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(tests, f)
        stdin_path = None
        if job.mode == "stdio":
            stdin_path = os.path.join(job_dir, "stdin")
            Path(stdin_path).write_text(job.stdin)
        return {"program": job.program, "mode": job.mode, "entry_point": job.entry_point,
                "tests_path": tests_path, "stdin_path": stdin_path, "job_dir": job_dir,
                "timeout_s": self.timeout_s, "limits": asdict(self.limits), "uid": uid}

    def _take_zygote(self) -> ChildProcess:
        """An idle sandbox server, or a new one; one that died while idle is reaped and replaced, costing no job."""
        while True:
            try:
                zygote = self._idle.get_nowait()
            except queue.Empty:
                return _start_zygote(self.base_dir, once=not self.persistent)
            if not zygote.exited():
                return zygote
            log.warning("code sandbox server (pid %d) died while idle; starting a new one", zygote.pid)
            zygote.stop()

    def _give_back(self, zygote: ChildProcess | None) -> None:
        if zygote is None:
            return
        if not self.persistent or self._closed:
            zygote.stop()
        else:
            self._idle.put(zygote)

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True)
        while True:
            try:
                self._idle.get_nowait().stop()
            except queue.Empty:
                break
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
