"""A long run replaces many dead reward workers; each one not reaped stays a zombie until the run
ends. Here the idle worker's process is killed from outside (as the OOM killer would) and the next
call replaces it, over and over; afterwards no zombie may be left."""
import process_scan

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


def _new_zombies(before: set[int]) -> list[process_scan.SeenProcess]:
    return [p for p in process_scan.zombie_descendants() if p.pid not in before]


def test_replaced_math_verify_workers_are_reaped():
    before = {p.pid for p in process_scan.zombie_descendants()}
    pool = MathVerifyPool(num_procs=1)
    try:
        killed = _replace_dead_workers(lambda: _check(pool.equal("$1/2$", "$0.5$") == (True, None)),
                                       "rewards.math_worker", MATH_REPLACEMENTS)
        assert pool.restarts == MATH_REPLACEMENTS
        assert _new_zombies(before) == [], f"{len(_new_zombies(before))} of {len(killed)} dead workers not reaped"
    finally:
        pool.close()
    assert process_scan.running("rewards.math_worker", process_scan.children()) == []


def test_replaced_sandbox_servers_are_reaped():
    before = {p.pid for p in process_scan.zombie_descendants()}
    job = SandboxJob(program="def f(x):\n    return x + 1", test_code="assert f(1) == 2")
    with Sandbox(num_workers=1, timeout_s=5) as sandbox:
        killed = _replace_dead_workers(lambda: _check(sandbox.run(job).all_passed), "rewards.sandbox_server",
                                       SERVER_REPLACEMENTS)
        assert _new_zombies(before) == [], f"{len(_new_zombies(before))} of {len(killed)} dead servers not reaped"
    with Sandbox(num_workers=1, timeout_s=5, persistent=False) as sandbox:  # a fresh server per job
        for _ in range(FRESH_SERVER_JOBS):
            _check(sandbox.run(job).all_passed)
        assert _new_zombies(before) == []
    assert process_scan.running("rewards.sandbox_server", process_scan.children()) == []


def _check(ok: bool) -> bool:
    assert ok
    return ok
