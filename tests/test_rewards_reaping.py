"""A long run replaces many dead reward workers; each one not reaped stays a zombie until the run
ends. Here the idle worker's process is killed from outside (as the OOM killer would) and the next
call replaces it, over and over; afterwards no zombie may be left."""
import sys

import process_scan
import pytest

from dualmode_rl.rewards.child_process import ChildProcess
from dualmode_rl.rewards.math_worker import MathVerifyPool
from dualmode_rl.rewards.sandbox import Sandbox, SandboxJob

SERVER_REPLACEMENTS = 200
# A Math-Verify worker imports sympy at start (0.3-0.5 s here, against 0.1 s for a sandbox server);
# both are stopped and reaped by the same code (rewards/child_process.py), so the long series runs
# on the sandbox servers and a short one on the real Math-Verify workers.
MATH_REPLACEMENTS = 20
FRESH_SERVER_JOBS = 20


def _replace_dead_workers(call, mark: str, times: int) -> list[int]:
    """Kill the idle worker `times` times, each time calling `call`, which must replace it; the pids killed."""
    call()
    killed = []
    for _ in range(times):
        (worker,) = process_scan.running(mark, process_scan.children())
        process_scan.kill(worker.pid)
        process_scan.wait_until_exited(worker.pid)  # dead, not reaped: reaping is the pool's job
        killed.append(worker.pid)
        call()
    (last,) = process_scan.running(mark, process_scan.children())
    assert last.pid not in killed
    return killed


def _new_zombies(before: set[int], ours: set[int] | None = None) -> list[process_scan.SeenProcess]:
    """Zombies that were not zombies before; with `ours`, only those among these pids (another test's
    late-exiting child is not this code's to reap)."""
    return [p for p in process_scan.zombie_descendants() if p.pid not in before and (ours is None or p.pid in ours)]


def test_a_worker_that_dies_before_it_is_ready_is_reaped():
    before = {p.pid for p in process_scan.zombie_descendants()}
    with pytest.raises(EOFError):
        ChildProcess([sys.executable, "-c", "import sys; sys.exit(3)"], ready_timeout_s=60)
    assert _new_zombies(before) == []


def test_replaced_math_verify_workers_are_reaped():
    before = {p.pid for p in process_scan.zombie_descendants()}
    pool = MathVerifyPool(num_procs=1)
    try:
        killed = _replace_dead_workers(lambda: _check(pool.equal("$1/2$", "$0.5$") == (True, None)),
                                       "rewards.math_worker", MATH_REPLACEMENTS)
        assert pool.restarts == MATH_REPLACEMENTS
        left = _new_zombies(before, set(killed))
        assert left == [], f"{len(left)} of {len(killed)} dead workers not reaped"
    finally:
        pool.close()
    assert process_scan.running("rewards.math_worker", process_scan.children()) == []


def test_replaced_sandbox_servers_are_reaped(monkeypatch):
    import dualmode_rl.rewards.sandbox as sandbox_module

    started: set[int] = set()  # every sandbox server this test starts (the real ChildProcess, its pid noted)

    def noting_pid(*args, **kwargs):
        child = ChildProcess(*args, **kwargs)
        started.add(child.pid)
        return child

    monkeypatch.setattr(sandbox_module, "ChildProcess", noting_pid)
    before = {p.pid for p in process_scan.zombie_descendants()}
    job = SandboxJob(program="def f(x):\n    return x + 1", test_code="assert f(1) == 2")
    with Sandbox(num_workers=1, timeout_s=5) as sandbox:
        killed = _replace_dead_workers(lambda: _check(sandbox.run(job).all_passed), "rewards.sandbox_server",
                                       SERVER_REPLACEMENTS)
        assert set(killed) <= started
        left = _new_zombies(before, started)
        assert left == [], f"{len(left)} of {len(killed)} dead servers not reaped"
    with Sandbox(num_workers=1, timeout_s=5, persistent=False) as sandbox:  # a fresh server per job
        for _ in range(FRESH_SERVER_JOBS):
            _check(sandbox.run(job).all_passed)
        assert len(started) >= SERVER_REPLACEMENTS + FRESH_SERVER_JOBS
        assert _new_zombies(before, started) == []
    assert process_scan.running("rewards.sandbox_server", process_scan.children()) == []


def _check(ok: bool) -> bool:
    assert ok
    return ok


def test_a_sandbox_server_killed_mid_job_takes_the_job_along():
    """The parent kills a server that stops answering; the job's driver and the program it runs
    (its own session, out of reach of the server's process group) must not outlive it."""
    import threading
    import time

    sleeper = SandboxJob(program="import time\ntime.sleep(600)\ndef f(): return 1", test_code="assert f() == 1")
    with Sandbox(num_workers=1, timeout_s=60) as sandbox:
        _check(sandbox.run(SandboxJob(program="def f(): return 1", test_code="assert f() == 1")).all_passed)
        (server,) = process_scan.running("rewards.sandbox_server", process_scan.children())
        results = []
        job = threading.Thread(target=lambda: results.append(sandbox.run(sleeper)))
        job.start()
        deadline = time.monotonic() + 30
        while len(job_processes := _below(server.pid)) < 2 and time.monotonic() < deadline:  # driver and program
            time.sleep(0.05)
        assert len(job_processes) == 2
        process_scan.kill(server.pid)
        job.join(30)
        assert results and not results[0].all_passed and "sandbox server failed" in results[0].error
        deadline = time.monotonic() + 30  # its own wait: the waits above may have used up the first one on a loaded box
        while time.monotonic() < deadline and _still_running(job_processes):
            time.sleep(0.05)
        assert _still_running(job_processes) == []


def _below(pid: int) -> list[int]:
    procs = process_scan.descendants()
    found, frontier = [], {pid}
    while frontier:
        frontier = {p.pid for p in procs if p.ppid in frontier}
        found += frontier
    return found


def _still_running(pids: list[int]) -> list[int]:
    running = {p.pid for p in process_scan.everywhere() if not p.zombie}
    return [pid for pid in pids if pid in running]
