"""Sandbox server: a pre-imported zygote that forks one isolated job per request.

Process tree per job (threat model in rewards/SANDBOX.md):

    zygote Z (trusted; no network namespace of its own after start-up when root)
      └─ job driver A (trusted; holds the tests, runs them, writes the result to Z)
           └─ program P (untrusted; pid 1 of a new pid namespace, private read-only filesystem
              with an empty tmpfs as cwd, rlimits, unprivileged uid, scrubbed environment)

P is forked before A reads the tests, so the tests and expected values never exist in P's
memory. P only answers calls (`run_function_tests`) or writes stdout to a file (stdio mode).
Killing P tears down its pid namespace, and with it every process it started.

Protocol on stdin/stdout of Z: length-prefixed JSON (sandbox_wire). Run as
`python -m dualmode_rl.rewards.sandbox_server` (persistent) or with `--once` (one job, then exit).
"""
from __future__ import annotations

import builtins
import importlib
import json
import os
import resource
import signal
import sys
import time

from dualmode_rl.rewards import sandbox_jail as jail
from dualmode_rl.rewards.sandbox_driver import ProgramChannel, run_function_tests
from dualmode_rl.rewards.sandbox_wire import WireError, WireTimeout, encode_value, decode_value, recv_message, send_message

# Modules solutions commonly import: loaded once in the zygote, shared by every fork.
PRELOAD = ("math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
           "typing", "random", "json", "fractions", "decimal", "statistics", "copy", "operator",
           "datetime", "hashlib", "ast", "traceback")
PR_SET_CHILD_SUBREAPER = 36
REAP_TIMEOUT_S = 5.0
PROGRAM_IN, PROGRAM_OUT = 3, 4  # the program's RPC fds after setup


def _is_root() -> bool:
    return os.geteuid() == 0


# ---------------------------------------------------------------- program process (untrusted)

def _enter_program_jail(job: dict, in_pid_namespace: bool, fds: dict) -> list[str]:
    limits = jail.Limits(**job["limits"])
    notes = []
    os.setsid()
    cwd = fds["workdir"]
    if _is_root() and in_pid_namespace:
        try:
            notes += jail.private_filesystem(limits.tmpfs_bytes)
            cwd = "/tmp/work"  # empty even when the project itself was bound back under /tmp
            os.makedirs(cwd, exist_ok=True)
            os.chmod(cwd, 0o1777)
        except OSError as exc:
            notes.append(f"no private filesystem: {exc}")
    os.chdir(cwd)
    for target, fd in ((0, fds["stdin"]), (1, fds["stdout"]), (2, fds["stderr"])):
        os.dup2(fd, target)
    high_in, high_out = os.dup(fds["from_driver"]), os.dup(fds["to_driver"])
    os.dup2(high_in, PROGRAM_IN)
    os.dup2(high_out, PROGRAM_OUT)
    jail.close_fds_except({0, 1, 2, PROGRAM_IN, PROGRAM_OUT})
    jail.scrub_environment()
    if not _is_root():
        limits.max_processes += _count_own_processes()
    jail.no_new_privileges()
    jail.apply_rlimits(limits)
    if _is_root():
        if in_pid_namespace and not jail.python_readable_by_others():
            # The interpreter is unreadable to other uids even after private_filesystem: stay uid
            # 0 without any capability; the pid namespace keeps kill() away from the host.
            jail.drop_capabilities()
        else:
            jail.drop_privileges(job["uid"])
    jail.die_with_parent(None if in_pid_namespace else fds["driver"])  # the driver's death ends the program
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)
    sys.argv = ["solution.py"]
    return notes


def _count_own_processes() -> int:
    uid, count = os.getuid(), 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                count += os.stat(f"/proc/{name}").st_uid == uid
            except OSError:
                pass
    return count


_BUILTIN_BASES = (bool, int, float, complex, str, bytes, tuple, list, dict, set, frozenset)


def _as_builtin(value):
    """Instances of subclasses of builtin types (Counter, OrderedDict, namedtuple, numpy.float64)
    as the builtin value they hold, read with the base type's own methods; None otherwise.
    (This runs in the untrusted process: it is a convenience for honest programs, not a defence.)"""
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    for base in _BUILTIN_BASES:
        if isinstance(value, base):
            if base is dict:
                return dict(dict.items(value))
            if base in (list, tuple, set, frozenset):
                return base(base.__iter__(value))
            return base(value) if base is not bool else bool(int.__int__(value))
    return None


def _serve_calls(namespace: dict) -> None:
    handles: dict[int, object] = {}

    def store(value, depth):
        plain = _as_builtin(value)
        if plain is not None:
            return encode_value(plain, store, depth + 1)
        handles[len(handles)] = value
        try:
            truth = bool(value)
        except Exception:  # noqa: BLE001
            truth = None
        return {"$h": [len(handles) - 1, truth]}

    def resolve(hid, _truth):
        return handles[hid]

    while True:
        try:
            msg = recv_message(PROGRAM_IN)
        except (EOFError, OSError, WireError):
            return
        try:
            target = msg["target"]
            obj = namespace[target] if isinstance(target, str) else handles[target]
            if msg["op"] == "getattr":
                result = getattr(obj, msg["name"])
            else:
                args = [decode_value(a, resolve) for a in msg["args"]]
                kwargs = {k: decode_value(v, resolve) for k, v in msg["kwargs"].items()}
                result = obj(*args, **kwargs)
            reply = {"value": encode_value(result, store)}
        except BaseException as exc:  # noqa: BLE001 - everything the program raises is reported
            reply = {"error": type(exc).__name__, "message": str(exc)[:500]}
        send_message(PROGRAM_OUT, reply)


def _run_program(job: dict, in_pid_namespace: bool, fds: dict) -> None:
    try:
        _enter_program_jail(job, in_pid_namespace, fds)
    except BaseException as exc:  # noqa: BLE001
        os.write(2, f"sandbox setup failed: {exc}\n".encode())
        os._exit(70)
    stdio = job["mode"] == "stdio"
    namespace = {"__name__": "__main__" if stdio else "__solution__", "__builtins__": builtins}
    try:
        exec(compile(job["program"], "solution.py", "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001
        if not stdio:
            send_message(PROGRAM_OUT, {"load_error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        if not isinstance(exc, SystemExit):
            import traceback
            traceback.print_exc()
        _flush_and_exit(1)
    if stdio:
        _flush_and_exit(0)
    names = [k for k, v in list(namespace.items()) if not k.startswith("__") and callable(v)]
    modules = {k: v.__name__ for k, v in list(namespace.items())
               if type(v) is type(sys) and not k.startswith("__") and isinstance(v.__name__, str)}
    send_message(PROGRAM_OUT, {"names": names, "modules": modules})
    _serve_calls(namespace)
    _flush_and_exit(0)


def _flush_and_exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(code)


# ---------------------------------------------------------------- job driver (trusted)

def _wait_exit(pid: int, deadline: float) -> bool:
    """Wait for a child until the deadline; True if it exited."""
    pidfd = os.pidfd_open(pid)
    try:
        import select
        return bool(select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))[0])
    finally:
        os.close(pidfd)


def _kill_and_reap(pid: int, timeout_s: float = REAP_TIMEOUT_S) -> None:
    """SIGKILL a child that is not reaped yet and reap it; a child that does not exit in time (stuck
    in the kernel) is left to the zygote's sweep of its children."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        if _wait_exit(pid, time.monotonic() + timeout_s):
            os.waitpid(pid, 0)
    except (ChildProcessError, ProcessLookupError):
        pass


def _normalise_output(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def _read_tail(path: str, limit: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _drive_job(job: dict, result_fd: int) -> dict:
    start = time.monotonic()
    deadline = start + job["timeout_s"]
    job_dir = job["job_dir"]
    tests_fd = os.open(job["tests_path"], os.O_RDONLY)
    os.unlink(job["tests_path"])
    jail.make_undumpable()
    resource.setrlimit(resource.RLIMIT_CPU, (int(job["timeout_s"]) + 5,) * 2)
    in_pid_namespace = _is_root() and jail.try_unshare(jail.CLONE_NEWPID | jail.CLONE_NEWIPC)
    to_program_r, to_program_w = os.pipe()
    to_driver_r, to_driver_w = os.pipe()
    workdir = os.path.join(job_dir, "work")
    os.mkdir(workdir, 0o700)
    if _is_root():
        os.chown(workdir, job["uid"], job["uid"])
    stdout_path, stderr_path = os.path.join(job_dir, "stdout"), os.path.join(job_dir, "stderr")
    fds = {
        "stdin": os.open(job.get("stdin_path") or os.devnull, os.O_RDONLY),
        "stdout": os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
        "stderr": os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
        "from_driver": to_program_r, "to_driver": to_driver_w, "workdir": workdir, "driver": os.getpid(),
    }
    pid = os.fork()
    if pid == 0:
        _run_program(job, in_pid_namespace, fds)
    for key in ("stdin", "stdout", "stderr", "from_driver", "to_driver"):
        os.close(fds[key])
    with os.fdopen(tests_fd, "rb") as f:
        tests = json.loads(f.read())
    isolation = {"pid_namespace": in_pid_namespace, "root": _is_root()}
    try:
        if job["mode"] == "stdio":
            outcome = _stdio_outcome(pid, deadline, stdout_path, tests["expected_stdout"])
        else:
            outcome = _function_outcome(job, tests, to_program_w, to_driver_r, deadline)
    finally:
        _kill_and_reap(pid)
    outcome.update(isolation=isolation, seconds=time.monotonic() - start,
                   stderr_tail=_read_tail(stderr_path, 600))
    return outcome


def _stdio_outcome(pid: int, deadline: float, stdout_path: str, expected: str) -> dict:
    if not _wait_exit(pid, deadline):
        return {"passed": [False], "error": "timeout"}
    with open(stdout_path, "rb") as f:
        got = f.read(16 << 20).decode(errors="replace")
    ok = _normalise_output(got) == _normalise_output(expected)
    return {"passed": [ok], "error": None if ok else "wrong output"}


def _standard_modules(modules: dict) -> dict:
    """Standard-library modules the program imported, imported here too (tests may rely on them)."""
    found = {}
    for alias, name in modules.items():
        if isinstance(alias, str) and alias.isidentifier() and isinstance(name, str) \
                and name.split(".")[0] in sys.stdlib_module_names:
            try:
                found[alias] = importlib.import_module(name)
            except Exception:  # noqa: BLE001
                pass
    return found


def _function_outcome(job: dict, tests: dict, to_program: int, from_program: int, deadline: float) -> dict:
    try:
        hello = recv_message(from_program, deadline)
    except WireTimeout:
        return {"passed": [], "error": "timeout while loading the program"}
    except (EOFError, OSError, WireError):
        return {"passed": [], "error": "program exited while loading"}
    if not isinstance(hello, dict) or not isinstance(hello.get("names"), list):
        error = hello.get("load_error") if isinstance(hello, dict) else None
        return {"passed": [], "error": f"program failed to load: {error or 'bad handshake'}"}
    names = [n for n in hello["names"] if isinstance(n, str) and n.isidentifier()]
    modules = hello.get("modules") if isinstance(hello.get("modules"), dict) else {}
    channel = ProgramChannel(to_program, from_program, deadline)
    passed, error = run_function_tests(tests["test_code"], job.get("entry_point"), names, channel,
                                       _standard_modules(modules))
    return {"passed": passed, "error": error}


def _job_process(job: dict, result_fd: int) -> None:
    try:
        outcome = _drive_job(job, result_fd)
    except BaseException as exc:  # noqa: BLE001
        outcome = {"passed": [], "error": f"sandbox failure: {type(exc).__name__}: {exc}"}
    try:
        send_message(result_fd, outcome)
    finally:
        os._exit(0)


# ---------------------------------------------------------------- zygote (trusted)

def _handle(job: dict) -> dict:
    zygote = os.getpid()
    result_r, result_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(result_r)
        jail.die_with_parent(zygote)
        _job_process(job, result_w)
    os.close(result_w)
    try:
        result = recv_message(result_r, time.monotonic() + job["timeout_s"] + 5)
    except WireTimeout:
        result = {"passed": [], "error": "timeout (driver)"}
    except (EOFError, WireError, OSError) as exc:
        result = {"passed": [], "error": f"driver died: {exc}"}
    finally:
        os.close(result_r)
        _kill_and_reap(pid)
        _kill_children()
    return result


def _kill_children(timeout_s: float = REAP_TIMEOUT_S) -> None:
    """SIGKILL and reap every child the zygote still has once a job is over: a program whose driver
    died (re-parented here, the zygote being a child subreaper) or whatever a program started outside
    a pid namespace. Costs one system call when there is none."""
    deadline = time.monotonic() + timeout_s
    while True:
        while _reap_one():
            pass
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return  # no children left
        if time.monotonic() > deadline:
            os.write(2, b"sandbox server: a child survived SIGKILL; it will be reaped after the next job\n")
            return
        for child in _child_pids():
            try:
                os.kill(child, signal.SIGKILL)  # our unreaped child: its pid cannot have been reused
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def _reap_one() -> bool:
    try:
        return os.waitpid(-1, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return False


def _child_pids() -> list[int]:
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                        found.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def main(argv: list[str]) -> None:
    requests, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # stray prints from trusted code must not corrupt the protocol
    for name in PRELOAD:
        __import__(name)
    import ctypes
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    network_isolated = _is_root() and jail.try_unshare(jail.CLONE_NEWNET)
    send_message(replies, {"ready": True, "network_isolated": network_isolated, "root": _is_root()})
    once = "--once" in argv
    while True:
        try:
            job = recv_message(requests)
        except (EOFError, OSError):
            return
        send_message(replies, _handle(job))
        if once:
            return


if __name__ == "__main__":
    main(sys.argv[1:])
