"""OS isolation steps for the process that runs untrusted code (Linux).

Every step is best effort: what the machine allows is applied and reported, so the caller can log
once what isolation it has. Namespaces need root (or CAP_SYS_ADMIN); without them the sandbox
still has its own session, rlimits, a scrubbed environment and wall-clock kills.
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import stat
from dataclasses import dataclass

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP = 1, 4, 38, 24
_CAPSET_V3 = 0x20080522
_DEVICES = {"null": (1, 3), "zero": (1, 5), "random": (1, 8), "urandom": (1, 9)}

# Directories any user may write to on common systems: each gets a private, empty tmpfs.
WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
SAFE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Limits:
    memory_bytes: int = 1 << 30  # RLIMIT_AS
    cpu_seconds: int = 10
    max_processes: int = 32
    file_bytes: int = 16 << 20
    open_files: int = 64
    tmpfs_bytes: int = 64 << 20


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def try_unshare(flags: int) -> bool:
    try:
        unshare(flags)
        return True
    except OSError:
        return False


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), "prctl")


def die_with_parent(parent: int | None) -> None:
    """SIGKILL this process when its parent dies. A change of uid or gid clears the setting, so call
    it after dropping privileges. `parent`: its pid, to catch a parent that died before this call
    (None inside a new pid namespace, where the parent has no pid)."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def make_undumpable() -> None:
    """Stop same-uid processes from ptrace-ing us or reading /proc/<pid>/{mem,fd}."""
    prctl(PR_SET_DUMPABLE, 0)


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p.replace("\\040", " ") for p in points]


def private_filesystem(tmpfs_bytes: int) -> list[str]:
    """New mount namespace: every mount read-only, a fresh tmpfs on each world-writable dir, a
    /proc of our own pid namespace. Must run as root inside the new pid namespace. Returns the
    steps that failed (empty when fully isolated)."""
    unshare(CLONE_NEWNS)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    failed = []
    try:
        expose_python_installation(tmpfs_bytes)
    except OSError as exc:
        failed.append(f"python installation: {exc}")
    for point in _mount_points():
        if point.startswith("/proc"):
            continue
        try:
            mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID)
        except OSError:
            failed.append(f"ro {point}")
    try:
        _minimal_dev(tmpfs_bytes)
    except OSError:
        failed.append("dev")
    hidden = _hidden_by_tmpfs(_needed_paths())
    for path in WRITABLE_DIRS:
        if os.path.isdir(path):
            try:
                mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_bytes},mode=1777")
            except OSError:
                failed.append(f"tmpfs {path}")
    for path, fd in hidden.items():
        try:
            os.makedirs(path, 0o755, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID)
        except OSError:
            failed.append(f"bind {path}")
        finally:
            os.close(fd)
    try:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
    except OSError:
        failed.append("proc")
    return failed


def _needed_paths() -> list[str]:
    """The project (the harness imports `rewards`) and the environment (a venv's sys.prefix)."""
    project = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    return sorted({project, os.path.realpath(__import__("sys").prefix)})


def _hidden_by_tmpfs(paths: list[str]) -> dict[str, int]:
    """Paths inside a world-writable dir (a checkout under /tmp, say) that its fresh tmpfs would
    hide: O_PATH handles taken now, bound back read-only after the tmpfs is mounted."""
    return {p: os.open(p, os.O_PATH) for p in paths
            if any(p.startswith(d.rstrip("/") + "/") for d in WRITABLE_DIRS) and os.path.isdir(p)}


def _minimal_dev(tmpfs_bytes: int) -> None:
    """A tmpfs /dev holding only null, zero, random and urandom (no disks, no terminals)."""
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID, f"size={tmpfs_bytes},mode=755")
    for name, (major, minor) in _DEVICES.items():
        os.mknod(f"/dev/{name}", 0o666 | stat.S_IFCHR, os.makedev(major, minor))
        os.chmod(f"/dev/{name}", 0o666)
    os.mkdir("/dev/shm", 0o1777)
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink(f"/proc/self/fd/{i}", f"/dev/{name}")
    os.symlink("/proc/self/fd", "/dev/fd")


def drop_capabilities() -> None:
    """Keep uid 0 but without any capability, now or after exec (bounding set emptied)."""
    cap = 0
    while _libc.prctl(PR_CAPBSET_DROP, ctypes.c_ulong(cap), 0, 0, 0) == 0:
        cap += 1
    header = (ctypes.c_uint32 * 2)(_CAPSET_V3, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(_libc.capset(header, data), "capset")


def _python_paths() -> set[str]:
    import sys
    import sysconfig
    paths = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths |= {sys.base_prefix, sys.prefix, os.path.dirname(sys.executable)}
    return {os.path.realpath(p) for p in paths}


def _first_closed_ancestor(path: str) -> str | None:
    parts = path.split(os.sep)
    for i in range(2, len(parts) + 1):
        ancestor = os.sep.join(parts[:i])
        if not os.stat(ancestor).st_mode & stat.S_IXOTH:
            return ancestor
    return None


def python_readable_by_others() -> bool:
    """Whether an unprivileged uid could import from this interpreter's installation."""
    return all(_first_closed_ancestor(p) is None for p in _python_paths())


def expose_python_installation(tmpfs_bytes: int) -> None:
    """Python installed under a private directory (say /root/.pyenv): cover that directory with
    an empty tmpfs and bind back only the interpreter's own folders, so an unprivileged uid can
    import the standard library and nothing else from there becomes visible."""
    roots = sorted({os.path.realpath(__import__("sys").base_prefix), os.path.realpath(__import__("sys").prefix)})
    covered: dict[str, list[str]] = {}
    for root in roots:
        closed = _first_closed_ancestor(root)
        if closed is not None and closed != root:
            covered.setdefault(closed, []).append(root)
    for closed, inner in covered.items():
        handles = {root: os.open(root, os.O_PATH) for root in inner}
        mount("tmpfs", closed, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_bytes},mode=755")
        for root, fd in handles.items():
            os.makedirs(root, 0o755, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", root, None, MS_BIND | MS_REC)
            os.close(fd)


def apply_rlimits(limits: Limits) -> None:
    def lim(res, value):
        resource.setrlimit(res, (value, value))

    lim(resource.RLIMIT_CPU, max(1, int(limits.cpu_seconds)))
    lim(resource.RLIMIT_FSIZE, limits.file_bytes)
    lim(resource.RLIMIT_NOFILE, limits.open_files)
    lim(resource.RLIMIT_NPROC, limits.max_processes)
    lim(resource.RLIMIT_CORE, 0)
    lim(resource.RLIMIT_AS, limits.memory_bytes)


def drop_privileges(uid: int) -> bool:
    """Become an unprivileged uid with no groups (root only). Returns whether it happened."""
    if os.geteuid() != 0:
        return False
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    return True


def scrub_environment() -> None:
    os.environ.clear()
    os.environ.update(SAFE_ENV)


def close_fds_except(keep: set[int]) -> None:
    for fd in sorted(int(n) for n in os.listdir("/proc/self/fd")):
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def no_new_privileges() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)
