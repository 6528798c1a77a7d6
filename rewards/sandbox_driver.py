"""The trusted test driver: runs a row's test code against an untrusted program in another process.

The test code (HumanEval `check(candidate)` or MBPP-style asserts) runs here, in a process the
untrusted program cannot reach. Every name the program defines appears here as a proxy whose
calls travel to the program's process; results come back as plain data (see sandbox_wire), so
all comparisons run on fresh builtin values. Each `assert` statement is rewritten to record its
own outcome, so one failing assert does not hide the others (pass fraction).
"""
from __future__ import annotations

import ast
import builtins

from dualmode_rl.rewards.sandbox_wire import Handle, WireError, WireTimeout, decode_value, encode_value, recv_message, send_message

_RECORD = "_dualmode_rl_record_assert"


class ProgramGone(BaseException):
    """The untrusted process died or broke the protocol; nothing more can pass."""


class _AssertRecorder(ast.NodeTransformer):
    def __init__(self):
        self.count = 0

    def visit_Assert(self, node: ast.Assert):
        index = self.count
        self.count += 1
        # try: _ok = bool(<test>)  except BaseException: _ok = False ;  record(index, _ok)
        ok = "_dualmode_rl_assert_ok"
        body = ast.Assign(targets=[ast.Name(ok, ast.Store())],
                          value=ast.Call(ast.Name("bool", ast.Load()), [node.test], []))
        fail = ast.Assign(targets=[ast.Name(ok, ast.Store())], value=ast.Constant(False))
        handler = ast.ExceptHandler(type=ast.Name("BaseException", ast.Load()), name=None, body=[fail])
        record = ast.Expr(ast.Call(ast.Name(_RECORD, ast.Load()),
                                   [ast.Constant(index), ast.Name(ok, ast.Load())], []))
        return [ast.Try(body=[body], handlers=[handler], orelse=[], finalbody=[]), record]


def instrument_tests(test_code: str) -> tuple[object, int]:
    """Compile test code with every assert recording its outcome; returns (code, n_asserts)."""
    tree = ast.parse(test_code, "<tests>")
    recorder = _AssertRecorder()
    tree = ast.fix_missing_locations(recorder.visit(tree))
    return compile(tree, "<tests>", "exec"), recorder.count


class ProgramChannel:
    """RPC to the untrusted process: call a named global or a handle, read an attribute."""

    def __init__(self, to_program: int, from_program: int, deadline: float):
        self.to_program, self.from_program, self.deadline = to_program, from_program, deadline
        self.alive = True
        self.failure: str | None = None

    def _fail(self, reason: str) -> None:
        self.alive, self.failure = False, reason

    def request(self, message: dict):
        if not self.alive:
            raise ProgramGone(self.failure)
        try:
            send_message(self.to_program, message)
            reply = recv_message(self.from_program, self.deadline)
        except WireTimeout:
            self._fail("timeout")
            raise
        except (OSError, EOFError, WireError) as exc:
            self._fail(f"program died: {exc}")
            raise ProgramGone(self.failure) from None
        if type(reply) is not dict:
            self._fail("program broke the protocol")
            raise ProgramGone(self.failure)
        if "value" in reply:
            try:
                return decode_value(reply["value"], RemoteObject.bind(self))
            except (WireError, TypeError, ValueError) as exc:
                self._fail(f"program sent a malformed value: {exc}")
                raise ProgramGone(self.failure) from None
        raise _exception_from(reply.get("error"), str(reply.get("message", ""))[:500])


def _exception_from(name, message: str) -> Exception:
    cls = getattr(builtins, name, None) if isinstance(name, str) else None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            pass
    return RuntimeError(f"{name}: {message}")


class RemoteObject:
    """A proxy for an object living in the untrusted process. Equal only to itself; no truth value."""

    __slots__ = ("_channel", "_target", "_truth")

    def __init__(self, channel: ProgramChannel, target, truth: bool | None = None):
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_truth", truth)

    @staticmethod
    def bind(channel: ProgramChannel):
        return lambda hid, truth: RemoteObject(channel, hid, truth)

    def __call__(self, *args, **kwargs):
        return self._channel.request({
            "op": "call", "target": self._target,
            "args": [encode_value(_as_handle(a)) for a in args],
            "kwargs": {k: encode_value(_as_handle(v)) for k, v in kwargs.items()},
        })

    def __getattr__(self, name: str):
        return self._channel.request({"op": "getattr", "target": self._target, "name": name})

    def __bool__(self):
        # The program reported the truth value; believing it grants nothing a plain True would not.
        if self._truth is None:
            raise TypeError("an object from the program without a truth value")
        return self._truth

    def __repr__(self):
        return f"<program object {self._target!r}>"


def _as_handle(value):
    if type(value) is RemoteObject and isinstance(value._target, int):
        return Handle(value._target)
    if type(value) is RemoteObject:
        raise TypeError("pass program functions by calling them, not as values")
    return value


def run_function_tests(test_code: str, entry_point: str | None, program_names: list[str],
                       channel: ProgramChannel, modules: dict | None = None) -> tuple[list[bool], str | None]:
    """Run the tests; returns (per-assert outcome, error or None)."""
    code, n_asserts = instrument_tests(test_code)
    if n_asserts == 0:
        return [], "test code has no assert"
    outcomes: list[bool | None] = [None] * n_asserts

    def record(index: int, ok: bool) -> None:
        outcomes[index] = bool(ok) and outcomes[index] is not False

    namespace = {"__name__": "__tests__", _RECORD: record, **(modules or {})}
    namespace.update({name: RemoteObject(channel, name) for name in program_names})
    error = None
    try:
        exec(code, namespace)
        if entry_point is not None and callable(namespace.get("check")):
            namespace["check"](RemoteObject(channel, entry_point))
    except (WireTimeout, ProgramGone):
        pass
    except Exception as exc:  # test code that depends on a failing call; remaining asserts fail
        error = f"{type(exc).__name__}: {str(exc)[:200]}"
    if not channel.alive:
        error = channel.failure
    return [o is True for o in outcomes], error
