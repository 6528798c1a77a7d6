"""`load_reward(spec)`: a built-in reward by name, or a plug-in.

Specs:
- built-ins: "auto" (route on reference["domain"], gated on format), "math", "code", "format",
  "arithmetic_steps" (every line with `=` in the reasoning is a true `a op b = c`),
  "mode_fidelity" (1 when the completion keeps to its mode: rewards.mode_fidelity);
- dotted path: "my_pkg.rewards:length_penalty";
- file path: "path/to/file.py:compute_score";
- entry point: "ep:GROUP:NAME" (or "ep:NAME" for the group "dualmode_rl.rewards").
The plug-in's convention (TRL, verl, native) is read from its signature (see rewards.plugins).
Anything that cannot load raises RewardPluginError naming the spec, at start-up.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

from dualmode_rl.rewards.plugins import adapt

ENTRY_POINT_GROUP = "dualmode_rl.rewards"


class RewardPluginError(Exception):
    def __init__(self, spec: str, reason: str):
        super().__init__(f"reward plug-in {spec!r} cannot be loaded: {reason}")
        self.spec, self.reason = spec, reason


def _builtin(name: str):
    if name == "math":
        from dualmode_rl.rewards.math import MathReward
        return MathReward()
    if name == "code":
        from dualmode_rl.rewards.code import CodeReward
        return CodeReward()
    if name == "format":
        from dualmode_rl.rewards.format import FormatReward
        return FormatReward()
    if name == "auto":
        from dualmode_rl.rewards.auto import DomainRouter
        return DomainRouter()
    if name == "arithmetic_steps":
        from dualmode_rl.rewards.arithmetic_steps import ArithmeticStepsReward
        return ArithmeticStepsReward()
    if name == "mode_fidelity":
        from dualmode_rl.rewards.mode_fidelity import ModeFidelityReward
        return ModeFidelityReward()
    return None


BUILTINS = ("auto", "math", "code", "format", "arithmetic_steps", "mode_fidelity")


def _ship_by_value(module) -> None:
    """A plug-in file is not importable by name in another process: have cloudpickle, and Ray's copy of
    it when Ray is loaded, send its code along, so Ray can ship the reward to its workers."""
    for name in ("cloudpickle", "ray.cloudpickle"):
        if name.startswith("ray") and "ray" not in sys.modules:
            continue
        try:
            importlib.import_module(name).register_pickle_by_value(module)
        except ImportError:
            pass


def _load_object(spec: str):
    if spec.startswith("ep:"):
        parts = spec.split(":")
        group, name = (parts[1], parts[2]) if len(parts) == 3 else (ENTRY_POINT_GROUP, parts[1])
        found = [ep for ep in entry_points(group=group) if ep.name == name]
        if not found:
            raise LookupError(f"no entry point {name!r} in group {group!r}")
        return found[0].load()
    if ":" not in spec:
        raise ValueError(f"not a built-in ({', '.join(BUILTINS)}) and not 'module:function' or 'file.py:function'")
    where, attr = spec.rsplit(":", 1)
    if where.endswith(".py"):
        path = Path(where).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"no file {path}")
        module_name = f"dualmode_rl_reward_plugin_{abs(hash(str(path)))}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
        _ship_by_value(module)
    else:
        module = importlib.import_module(where)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def load_reward(spec: str):
    """Return a RewardFn: an object with `name` and `__call__(list[RewardInput]) -> list[RewardOutput]`."""
    builtin = _builtin(spec)
    if builtin is not None:
        return builtin
    try:
        obj = _load_object(spec)
        if not callable(obj):
            raise TypeError(f"{obj!r} is not callable")
        name = getattr(obj, "__name__", spec.rsplit(":", 1)[-1])
        return adapt(name, obj)
    except Exception as exc:  # noqa: BLE001 - any failure is a start-up error naming the spec
        raise RewardPluginError(spec, f"{type(exc).__name__}: {exc}") from exc
