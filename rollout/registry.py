"""The rollout engines by name: the one list that `rollout.engine` (config), the rollout worker and
the in-process engines of eval and the filter read. Nothing heavy is imported until an engine is built."""
from __future__ import annotations

import importlib

from .types import Engine

ENGINES = {
    "vllm": "dualmode_rl.rollout.vllm_engine:VllmEngine",
    "hf": "dualmode_rl.rollout.hf_engine:HfEngine",
}


def check_engine_name(name: str) -> str:
    if name not in ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; known: {', '.join(sorted(ENGINES))}")
    return name


def engine_class(name: str) -> type[Engine]:
    module, cls = ENGINES[check_engine_name(name)].split(":")
    return getattr(importlib.import_module(module), cls)


def build_engine(name: str, settings: dict) -> Engine:
    """The engine `name` built with its own keyword arguments `settings`."""
    return engine_class(name)(**settings)
