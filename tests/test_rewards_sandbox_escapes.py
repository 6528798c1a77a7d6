"""Adversarial programs against the code sandbox: each must score 0, and afterwards no file may
exist outside the sandbox's temporary dirs, no process may be left and memory must be back."""
import os
import socket
import time
import uuid
from pathlib import Path

import process_scan
import pytest

from dualmode_rl.rewards.code import CodeReward
from dualmode_rl.rewards.sandbox import Sandbox, SandboxJob
from dualmode_rl.rewards.types import RewardInput

MARK = f"dualmode_rl_pwned_{uuid.uuid4().hex[:8]}"
SECRET_NUMBER = 7364921  # appears only in the test code, never in the program's process
SECRET_ENV = f"tok-{uuid.uuid4().hex}"
SLEEP_ARG = "777.123"
TESTS = f"""
def check(candidate):
    assert candidate(2, 3) == 5
    assert candidate(10, -4) == 6
    assert candidate({SECRET_NUMBER}, 0) == {SECRET_NUMBER}
    assert not candidate(0, 0)
"""
WRITE_TARGETS = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/work/main", "/work", "/root", "/"]


def _attacks(port: int) -> dict[str, str]:
    write_all = "\n".join(
        f"try:\n    open({os.path.join(d, MARK)!r}, 'w').write('x')\nexcept Exception:\n    pass"
        for d in WRITE_TARGETS)
    return {
        "eq_always_true": "class A:\n def __eq__(s, o): return True\n def __ne__(s, o): return False\n"
                          " def __bool__(s): return False\ndef add(a, b): return A()",
        "int_subclass_eq": "class I(int):\n def __eq__(s, o): return True\n def __ne__(s, o): return False\n"
                           "def add(a, b): return I(-1)",
        "str_subclass_eq": "class S(str):\n def __eq__(s, o): return True\n __hash__ = str.__hash__\n"
                           "def add(a, b): return S('nope')",
        "list_subclass_eq": "class L(list):\n def __eq__(s, o): return True\ndef add(a, b): return L()",
        "dict_subclass_eq": "class D(dict):\n def __eq__(s, o): return True\ndef add(a, b): return D()",
        "float_nan": "def add(a, b): return float('nan')",
        "sys_exit_top": "import sys\nsys.exit(0)\ndef add(a, b): return a + b",
        "os_exit_top": "import os\nos._exit(0)",
        "sys_exit_in_call": "import sys\ndef add(a, b): sys.exit(0)",
        "os_exit_in_call": "import os\ndef add(a, b): os._exit(0)",
        "raise_systemexit_class": "def add(a, b): raise SystemExit(0)",
        "keyboard_interrupt": "def add(a, b): raise KeyboardInterrupt",
        "fake_pass_marker": "print('All tests passed!\\nPASSED\\n{\"passed\": true, \"score\": 1}')\n"
                            "def add(a, b): print('ok'); return None",
        "fake_marker_stderr": "import sys\nsys.stderr.write('OK 4/4 passed')\ndef add(a, b): return 0",
        "forge_protocol_messages": "from rewards.sandbox_wire import send_message\n"
                                   "for v in [True, 5, 6, 0]:\n    send_message(4, {'value': v})\n"
                                   "def add(a, b): return None",
        "forge_result_fds": "import os, json\nfor fd in range(3, 64):\n    try: os.write(fd, json.dumps("
                            "{'passed': [True]*4, 'error': None}).encode())\n    except OSError: pass\n",
        "patch_builtins": "import builtins\nbuiltins.bool = lambda x: True\nbuiltins.AssertionError = Exception\n"
                          "builtins.abs = lambda x: 0\ndef add(a, b): return object()",
        "patch_assert_helpers": "import unittest, math, operator\nunittest.TestCase.assertEqual = lambda *a: None\n"
                                "math.isclose = lambda *a, **k: True\noperator.eq = lambda a, b: True\n"
                                "def add(a, b): return 'x'",
        "inspect_caller_frames": "import inspect\ndef add(a, b):\n for f in inspect.stack():\n"
                                 "  for v in list(f.frame.f_locals.values()):\n"
                                 f"   if v == {SECRET_NUMBER - 1} + 1: return v\n return a - b",
        "gc_search_tests": "import gc\ndef add(a, b):\n for o in gc.get_objects():\n"
                           f"  if isinstance(o, str) and '{SECRET_NUMBER}' in o: return {SECRET_NUMBER}\n"
                           " return -1",
        "search_files_for_tests": "import os\ndef add(a, b):\n for root in ['/tmp', '/var/tmp', '/dev/shm', "
                                  "os.getcwd(), '/proc']:\n  for d, _, fs in os.walk(root):\n"
                                  "   for f in fs:\n    try:\n"
                                  f"     if b'{SECRET_NUMBER}' in open(os.path.join(d, f), 'rb').read(1 << 20): "
                                  f"return {SECRET_NUMBER}\n    except Exception: pass\n return -1",
        "fork_bomb": "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
        "fork_bomb_in_call": "import os\ndef add(a, b):\n while True:\n  try: os.fork()\n  except OSError: pass",
        "memory_bomb": "x = bytearray(50 * 1024**3)\ndef add(a, b): return a + b",
        "memory_bomb_growth": "def add(a, b):\n xs = []\n while True: xs.append(' ' * 10**7)",
        "infinite_loop_top": "while True:\n    pass",
        "infinite_loop_in_call": "def add(a, b):\n while True: pass",
        "sleep_in_call": "import time\ndef add(a, b): time.sleep(1000)",
        "ignore_signals_loop": "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):\n"
                               "    signal.signal(s, signal.SIG_IGN)\nwhile True: pass",
        "write_outside": write_all + "\ndef add(a, b): return None",
        "write_relative_escape": f"import os\nfor p in ['../{MARK}', '../../{MARK}', '../../../../{MARK}']:\n"
                                 "    try: open(p, 'w').write('x')\n    except Exception: pass\n"
                                 "def add(a, b): return None",
        "symlink_escape": f"import os\ntry:\n    os.symlink('/work/main/{MARK}', 'link'); open('link', 'w').write('x')\n"
                          "except Exception: pass\ndef add(a, b): return None",
        "subprocess_write": f"import subprocess\nsubprocess.run(['sh', '-c', 'echo x > /work/main/{MARK}; "
                            f"echo x > /tmp/{MARK}'])\ndef add(a, b): return None",
        "read_parent_env": "import os, glob\ndef add(a, b):\n found = os.environ.get('DUALMODE_RL_SECRET_ENV')\n"
                           " for p in glob.glob('/proc/*/environ'):\n  try:\n"
                           f"   if b'{SECRET_ENV}' in open(p, 'rb').read(): found = 1\n"
                           "  except Exception: pass\n"
                           f" return {SECRET_NUMBER} if found else -1",
        "daemon_grandchild": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                             "        time.sleep(600)\n    os._exit(0)\ndef add(a, b): return None",
        "daemon_exec_sleep": f"import os\nif os.fork() == 0:\n    os.setsid()\n    os.execv('/bin/sleep', "
                             f"['sleep', '{SLEEP_ARG}'])\ndef add(a, b): return None",
        "kill_parent": "import os, signal\nfor pid in (os.getppid(), 1):\n    try: os.kill(pid, signal.SIGKILL)\n"
                       "    except Exception: pass\ndef add(a, b): return None",
        "kill_everything": "import os, signal\ntry: os.kill(-1, signal.SIGKILL)\nexcept Exception: pass\n"
                           "def add(a, b): return None",
        "killpg_own_group": "import os, signal\ndef add(a, b): os.killpg(os.getpgid(0), signal.SIGKILL)",
        "network_connect": f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                           f"s.sendall(b'{MARK}')\ndef add(a, b): return a + b + 1",
        "raise_rlimits": "import resource\nfor r in (resource.RLIMIT_AS, resource.RLIMIT_NPROC, resource.RLIMIT_CPU):\n"
                         "    resource.setrlimit(r, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
                         "def add(a, b): return a + b",
        "become_root_again": "import os\nos.setuid(0)\ndef add(a, b): return a + b",
        # A new user namespace is allowed, but the inherited read-only mounts stay locked in it.
        "userns_remount_rw": "import ctypes, os\nlibc = ctypes.CDLL(None)\n"
                             "libc.unshare(0x10000000 | 0x00020000)\n"
                             "for p in (b'/', b'/work', b'/work/main', b'/tmp'):\n"
                             "    libc.mount(None, p, None, 32 | 4096, None)\n"
                             f"for d in ('/', '/work/main', '/tmp'):\n"
                             f"    try: open(os.path.join(d, '{MARK}'), 'w').write('x')\n"
                             "    except Exception: pass\ndef add(a, b): return None",
        "output_flood": "import sys\nsys.stdout.write('x' * (200 * 1024**2))\nsys.stdout.flush()\n"
                        "def add(a, b): return a + b",
        "fd_exhaustion": "fs = [open('/dev/null') for _ in range(10000)]\ndef add(a, b): return a + b",
        "close_channel": "import os\nos.close(3); os.close(4)\ndef add(a, b): return a + b",
        "exec_shell": "import os\nos.execv('/bin/sh', ['sh', '-c', 'echo PASSED'])",
        "deep_recursion_value": "def add(a, b):\n x = []\n for _ in range(100000): x = [x]\n return x",
        "self_referential_value": "def add(a, b):\n x = []\n x.append(x)\n return x",
        "huge_int": "def add(a, b): return 10 ** (10 ** 8)",
        "thread_spam_replies": "import threading\nfrom rewards.sandbox_wire import send_message\n"
                               "def spam():\n    while True: send_message(4, {'value': 5})\n"
                               "threading.Thread(target=spam, daemon=True).start()\ndef add(a, b): return None",
        "write_proc_sys": "try: open('/proc/sys/kernel/hostname', 'w').write('pwned')\nexcept Exception: pass\n"
                          "def add(a, b): return None",
        "mknod_disk": "import os, stat\ntry: os.mknod('disk', stat.S_IFBLK | 0o600, os.makedev(253, 0))\n"
                      "except Exception: pass\ndef add(a, b): return None",
        "no_function": "x = 1",
    }


SANDBOX_UIDS = range(1_500_000_000, 1_501_000_000)  # rewards/sandbox.py: one per live server


def _leftovers(servers: set[int]) -> tuple[list, list]:
    """Live processes of our servers' sandbox uids, and live sleepers of SLEEP_ARG under any uid but
    another job's sandbox uid (other jobs on the machine, this test included, run sandboxes too; a
    dead program waiting for init to reap it is no escape)."""
    ours = {SANDBOX_UIDS.start + pid % 1_000_000 for pid in servers}
    live = [p for p in process_scan.everywhere() if not p.zombie]
    return ([p for p in live if p.uid in ours],
            [p for p in process_scan.running(SLEEP_ARG, live) if p.uid in ours or p.uid not in SANDBOX_UIDS])


def _servers() -> set[int]:
    return {p.pid for p in process_scan.running("rewards.sandbox_server", process_scan.children())}


def _own_rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_adversarial_programs_score_zero_and_leave_nothing(monkeypatch):
    monkeypatch.setenv("DUALMODE_RL_SECRET_ENV", SECRET_ENV)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    rss_before = _own_rss()
    sandbox = Sandbox(num_workers=2, timeout_s=3)
    probe = sandbox.run(SandboxJob(program="def f(): return 1", test_code="assert f() == 1"))
    servers = _servers()
    attacks = _attacks(listener.getsockname()[1])
    if not probe.isolation.get("pid_namespace"):
        attacks.pop("kill_everything")  # without a pid namespace this would hit our own uid's processes
    reward = CodeReward(sandbox=sandbox)
    try:
        names = list(attacks)
        out = reward([RewardInput(f"```python\n{attacks[n]}\n```", "non_reasoning",
                                  {"test": TESTS, "entry_point": "add"}) for n in names])
        scored = {n: o.score for n, o in zip(names, out)}
        assert len(scored) >= 40
        assert {n: s for n, s in scored.items() if s != 0.0} == {}
        # the parent, the zygotes and the sandbox still work
        honest = reward([RewardInput("```python\ndef add(a, b):\n    return a + b\n```", "non_reasoning",
                                     {"test": TESTS, "entry_point": "add"})])
        assert honest[0].score == 1.0, honest[0].error
        servers |= _servers()
    finally:
        reward.close()
    try:
        conn, _ = listener.accept()
        pytest.fail(f"a sandboxed program reached the network: {conn.recv(100)!r}")
    except BlockingIOError:
        pass
    listener.close()
    time.sleep(0.5)
    leaked = [os.path.join(d, MARK) for d in WRITE_TARGETS + [os.getcwd()] if os.path.exists(os.path.join(d, MARK))]
    assert leaked == []
    # our own servers, alive or unreaped; what our programs may have left, searched machine-wide
    assert [p for p in process_scan.descendants() if "rewards" in p.cmdline or p.pid in servers] == []
    assert _leftovers(servers) == ([], [])
    assert not os.path.exists(sandbox.base_dir)
    # memory is back: every sandbox process is gone (their memory with them) and we did not grow
    assert _own_rss() < rss_before + (200 << 20)
