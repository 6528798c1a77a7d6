"""Loading a user's function by name, for every kind of plug-in (rewards, policy losses, advantage
estimators): "module:function", "path/to/file.py:function" or an installed package's entry point
"ep:NAME" ("ep:GROUP:NAME")."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path


class PluginError(ValueError):
    """A plug-in that cannot be loaded or breaks its contract; the message names it."""

    def __init__(self, kind: str, spec: str, reason: str):
        super().__init__(f"{kind} plug-in {spec!r} cannot be loaded: {reason}")
        self.kind, self.spec, self.reason = kind, spec, reason


def is_plugin_spec(spec: str) -> bool:
    return ":" in spec


def load_object(spec: str, entry_point_group: str):
    """The object `spec` names; raises the import's own error (the caller wraps it in a PluginError)."""
    if spec.startswith("ep:"):
        parts = spec.split(":")
        group, name = (parts[1], parts[2]) if len(parts) == 3 else (entry_point_group, parts[1])
        found = [ep for ep in entry_points(group=group) if ep.name == name]
        if not found:
            raise LookupError(f"no entry point {name!r} in group {group!r}")
        return found[0].load()
    where, attr = spec.rsplit(":", 1)
    module = _load_file(where) if where.endswith(".py") else importlib.import_module(where)
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _load_file(where: str):
    path = Path(where).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    module_name = f"dualmode_rl_plugin_{abs(hash(str(path)))}"
    if module_name in sys.modules:  # loaded already: the same functions, not a second copy
        return sys.modules[module_name]
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    _ship_by_value(module)
    return module


def _ship_by_value(module) -> None:
    """A plug-in file is not importable by name in another process: have cloudpickle, and Ray's copy of
    it when Ray is loaded, send its code along, so Ray can ship the plug-in to its workers."""
    for name in ("cloudpickle", "ray.cloudpickle"):
        if name.startswith("ray") and "ray" not in sys.modules:
            continue
        try:
            importlib.import_module(name).register_pickle_by_value(module)
        except ImportError:
            pass
