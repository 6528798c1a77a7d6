"""A rollout worker: one generation engine (vLLM or transformers) inside a Ray actor.

`RolloutWorker` is a plain class; `RolloutPool` turns it into an actor with `ray.remote(...)`, so the
same class also runs in-process (tests, `dualmode-rl eval`). vLLM spawns its engine process from inside the
actor, which is fine: the actor is not a `__main__` module.
"""
from __future__ import annotations

import os

import torch

from .modes import SamplingConfig
from .registry import build_engine
from .types import GenerationRequest, RolloutGroup


def current_node() -> str | None:
    """The Ray node id of this process, None outside Ray."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def current_gpus() -> list[int]:
    """The physical GPU ids Ray gave this process (empty outside Ray or without GPUs)."""
    import ray

    return [int(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []


def current_placement_group() -> str | None:
    """The id of the placement group this process runs in (None outside Ray or outside a group)."""
    import ray

    return ray.get_runtime_context().get_placement_group_id() if ray.is_initialized() else None


class RolloutWorker:
    def __init__(self, engine: str = "vllm", engine_kwargs: dict | None = None, env: dict[str, str] | None = None):
        """`env` is set before the engine starts, e.g. VLLM_CPU_OMP_THREADS_BIND ("0", "0-1") to pin vLLM's
        CPU threads, or VLLM_RAY_BUNDLE_INDICES for its tensor-parallel workers (rollout/placement.py)."""
        os.environ.update(env or {})
        self.engine_name = engine
        self.engine = build_engine(engine, dict(engine_kwargs or {}))

    def generate(self, requests: list[GenerationRequest], seed: int | None = None,
                 sampling: SamplingConfig | None = None) -> list[RolloutGroup]:
        return self.engine.generate(requests, seed, sampling)

    def generate_greedy(self, requests: list[GenerationRequest]) -> list[RolloutGroup]:
        return self.engine.generate_greedy(requests)

    def update_weights(self, weights: dict[str, torch.Tensor], version: int) -> int:
        self.engine.update_weights(weights, version)
        return self.engine.policy_version

    def load_weights_file(self, path: str, version: int) -> int:
        self.engine.load_weights_file(path, version)
        return self.engine.policy_version

    # ---- vLLM's weight-transfer API, driven by rollout/weight_transfer/client.py
    def transfer_init(self, init_info: dict) -> None:
        self.engine.init_weight_transfer(init_info)

    def transfer_start(self) -> None:
        self.engine.start_weight_update()

    def transfer_receive(self, update_info: dict) -> None:
        self.engine.receive_weights(update_info)

    def transfer_finish(self, version: int) -> int:
        self.engine.finish_weight_update(version)
        return self.engine.policy_version

    def sleep(self) -> None:
        self.engine.sleep()

    def wake_up(self) -> None:
        self.engine.wake_up()

    def prompt_logprobs(self, token_ids: list[int]) -> list[float]:
        return self.engine.prompt_logprobs(token_ids)

    def ping(self) -> dict:
        return {"pid": os.getpid(), "node": current_node(), "gpus": current_gpus(), "engine": self.engine_name,
                "placement_group": current_placement_group(),
                "policy_version": self.engine.policy_version,
                "sleeping": self.engine_name == "vllm" and self.engine.is_sleeping()}

    def shutdown(self) -> None:
        self.engine.shutdown()
