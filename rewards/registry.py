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

from dualmode_rl.plugins import PluginError, is_plugin_spec, load_object
from dualmode_rl.rewards.plugins import adapt
from dualmode_rl.rewards.types import SCORE_RANGE

ENTRY_POINT_GROUP = "dualmode_rl.rewards"


class RewardPluginError(PluginError):
    def __init__(self, spec: str, reason: str):
        super().__init__("reward", spec, reason)


BUILTIN_CLASSES = {  # name -> "module:class", imported only when that reward is built
    "auto": "dualmode_rl.rewards.auto:DomainRouter",
    "math": "dualmode_rl.rewards.math:MathReward",
    "code": "dualmode_rl.rewards.code:CodeReward",
    "format": "dualmode_rl.rewards.format:FormatReward",
    "arithmetic_steps": "dualmode_rl.rewards.arithmetic_steps:ArithmeticStepsReward",
    "mode_fidelity": "dualmode_rl.rewards.mode_fidelity:ModeFidelityReward",
}


def _builtin(name: str):
    if name not in BUILTIN_CLASSES:
        return None
    module, cls = BUILTIN_CLASSES[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def load_reward(spec: str, args: dict | None = None, columns: dict[str, str] | None = None,
                completion_format: str = "text", score_range: tuple[float, float] = SCORE_RANGE):
    """Return a RewardFn: an object with `name` and `__call__(list[RewardInput]) -> list[RewardOutput]`.

    Plug-in options (a `rewards.rewards` entry's keys, rewards.plugins): `args` calls the named factory with
    them to make the reward; `columns`, `completion_format` and `score_range` go to its adapter."""
    builtin = _builtin(spec)
    if builtin is not None:
        options = {"args": args, "columns": columns or None, "completion_format": completion_format != "text",
                   "range": tuple(score_range) != SCORE_RANGE}
        if any(options.values()):
            raise RewardPluginError(spec, f"{', '.join(k for k, v in options.items() if v)} apply to plug-ins, "
                                          f"not to the built-in {spec!r}")
        return builtin
    try:
        if not is_plugin_spec(spec):
            raise ValueError(f"not a built-in ({', '.join(BUILTIN_CLASSES)}) and not 'module:function' or 'file.py:function'")
        obj = load_object(spec, ENTRY_POINT_GROUP)
        if args is not None:
            obj = obj(**args)
        if not callable(obj):
            raise TypeError(f"{obj!r} is not callable")
        name = getattr(obj, "__name__", spec.rsplit(":", 1)[-1])
        return adapt(name, obj, score_range, columns, completion_format)
    except Exception as exc:  # noqa: BLE001 - any failure is a start-up error naming the spec
        raise RewardPluginError(spec, f"{type(exc).__name__}: {exc}") from exc
