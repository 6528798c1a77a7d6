"""The engine interface: every registered engine has the `Engine` Protocol's methods with its parameters,
the config names engines through the one registry, and the transformers engine takes no vLLM settings."""
from __future__ import annotations

import inspect

import pytest

from dualmode_rl.orchestration.components import engine_kwargs, rollout_engine_kwargs
from dualmode_rl.orchestration.config import VLLM_ONLY, ConfigError, load_config
from dualmode_rl.rollout.engine_base import EngineBase
from dualmode_rl.rollout.hf_engine import HfEngine
from dualmode_rl.rollout.registry import ENGINES, engine_class
from dualmode_rl.rollout.types import Engine

PROTOCOL_METHODS = [name for name, member in vars(Engine).items() if inspect.isfunction(member) and not name.startswith("_")]


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_every_registered_engine_has_the_protocols_methods_and_parameters(name):
    cls = engine_class(name)
    assert isinstance(cls.policy_version, property), name
    assert {"generate", "generate_greedy", "prompt_logprobs", "update_weights", "shutdown"} <= set(PROTOCOL_METHODS)
    for method in PROTOCOL_METHODS:
        expected = list(inspect.signature(getattr(Engine, method)).parameters)
        assert list(inspect.signature(getattr(cls, method)).parameters) == expected, f"{name}.{method}"


def test_an_unknown_engine_fails_at_config_load_naming_the_key_and_the_known_engines():
    with pytest.raises(ConfigError, match=r"rollout\.engine.*'sglang'.*hf, vllm"):
        load_config(None, ["rollout.engine=sglang"])


@pytest.mark.parametrize("key, value", [("enforce_eager", "true"), ("gpu_memory_utilization", "0.5"),
                                        ("tensor_parallel_size", "2"), ("in_process", "false")])
def test_a_vllm_setting_with_the_hf_engine_fails_at_config_load_naming_it(key, value):
    assert key in VLLM_ONLY
    with pytest.raises(ConfigError, match=rf"rollout\.{key} is a vLLM setting"):
        load_config(None, ["rollout.engine=hf", f"rollout.{key}={value}"])


def test_the_hf_engine_gets_only_its_own_arguments_and_refuses_vllms(tiny_model_dir):
    cfg = load_config(None, ["rollout.engine=hf"])
    shared = set(inspect.signature(EngineBase).parameters) - {"settings"}
    accepted = shared | set(inspect.signature(HfEngine._start).parameters) - {"self", "seed"}
    assert {"model_path", "sampling", "dtype", "device", "logprobs_mode"} <= accepted
    assert set(rollout_engine_kwargs(cfg, tiny_model_dir, 3, "file")) <= accepted
    assert set(engine_kwargs(cfg, tiny_model_dir, evaluation=True)) <= accepted
    with pytest.raises(TypeError, match="enforce_eager"):
        HfEngine(str(tiny_model_dir), enforce_eager=True)
