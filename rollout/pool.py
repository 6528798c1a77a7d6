"""A pool of rollout workers (Ray actors), one vLLM engine each, each engine in a placement group of
its own, or colocated in the learner's (rollout/placement.py).

- Requests go to the worker with the least pending work (samples x max new tokens), one batched call
  per worker, and come back in request order. `submit` queues them and returns at once (asynchronous
  rollout); `generate` waits.
- Weights arrive through vLLM's weight-transfer API (rollout/weight_transfer/sync.py drives the actors
  through `transfer_client()`), or with `rollout.weight_transfer: file` through `load_weights_file`:
  every actor loads a safetensors file learner rank 0 wrote (no weights through the Ray object store).
  `update_weights` puts a state dict in the object store once, for callers that hold the weights
  themselves (tests).
- Every sample carries the policy version of the weights that produced it.
- An actor that dies is replaced in its placement group and brought to the latest weights (the file
  path's, or through `on_replaced`, before any new work), and its unfinished requests are issued again.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .placement import EnginePlacement, plan_colocated_engine, plan_engine
from .modes import SamplingConfig
from .types import GenerationRequest, RolloutGroup
from .worker import RolloutWorker

log = logging.getLogger(__name__)


@dataclass
class PoolPlacement:
    num_cpus_per_worker: float = 1
    # GPUs per engine; None: its tensor_parallel_size when the Ray cluster has GPUs, else 0 (CPU)
    num_gpus_per_worker: float | None = None
    strategy: str = "PACK"  # Ray placement strategy of each engine's group: PACK, SPREAD, STRICT_PACK, STRICT_SPREAD
    cpu_binds: list[str] | None = None  # per worker VLLM_CPU_OMP_THREADS_BIND, e.g. ["0", "1"]
    ready_timeout_s: float = 600
    # Colocation: the learner's placement group (rollout/placement.py, colocated_bundles), whose GPU
    # bundles the engines share; None: each engine reserves a group of its own.
    shared_group: object | None = None
    shared_gpus: bool = False  # the shared group's bundles hold GPUs

    def engine(self, tensor_parallel_size: int, cluster_gpus: float, index: int = 0) -> EnginePlacement:
        if self.shared_group is not None:
            return plan_colocated_engine(index, tensor_parallel_size, self.num_cpus_per_worker, self.shared_gpus)
        gpus = self.num_gpus_per_worker
        if gpus is None:
            gpus = tensor_parallel_size if cluster_gpus > 0 else 0
        return plan_engine(tensor_parallel_size, gpus, self.num_cpus_per_worker)


@dataclass
class _Slot:
    """One bundle of the placement group and the actor currently living in it."""

    index: int
    actor: object
    pending_cost: float = 0.0
    restarts: int = 0
    restart_lock: threading.Lock = field(default_factory=threading.Lock)


class RolloutPool:
    def __init__(
        self,
        num_workers: int,
        engine_kwargs: dict,
        engine: str = "vllm",
        placement: PoolPlacement | None = None,
        max_reissues: int = 2,
    ):
        import ray
        from ray.util.placement_group import placement_group

        if num_workers < 1:
            raise ValueError(f"RolloutPool: num_workers must be >= 1, got {num_workers}")
        self.placement = placement or PoolPlacement()
        if self.placement.cpu_binds is not None and len(self.placement.cpu_binds) != num_workers:
            raise ValueError(f"RolloutPool: cpu_binds has {len(self.placement.cpu_binds)} entries for {num_workers} workers")
        if not ray.is_initialized():
            ray.init()
        self.engine = engine
        self.engine_kwargs = dict(engine_kwargs)
        self.max_reissues = max_reissues
        self._lock = threading.Lock()
        self._latest: tuple[str, object] | None = None  # (actor method, weights ref or file) of the newest weights
        self._file_lock = threading.Lock()  # a weights file is deleted only while no actor is loading it
        self._policy_version = int(self.engine_kwargs.get("policy_version", 0))
        self.closing = False
        self.membership = 0  # counts actor replacements: a weight-transfer group must be formed again
        self.on_replaced = None  # called (no arguments) after a replacement, before the actor gets work
        self.workers_per_engine = int(self.engine_kwargs.get("tensor_parallel_size", 1))
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        self.engine_placements = [self.placement.engine(self.workers_per_engine, cluster_gpus, i) for i in range(num_workers)]
        if self.placement.shared_group is not None:
            self.placement_groups = [self.placement.shared_group] * num_workers
        else:
            bundles = self.engine_placements[0].bundles
            self.placement_groups = [placement_group(bundles, strategy=self.placement.strategy) for _ in range(num_workers)]
            self._wait([pg.ready() for pg in self.placement_groups], f"{num_workers} placement groups of bundles {bundles}")
        self.slots = [_Slot(i, self._start_actor(i)) for i in range(num_workers)]
        for slot, info in zip(self.slots, self._wait([s.actor.ping.remote() for s in self.slots], "rollout workers to start")):
            log.info("rollout worker %d: pid %d on Ray node %s, GPUs %s", slot.index, info["pid"], info["node"], info["gpus"])

    # ---- public API -------------------------------------------------------------------------
    @property
    def policy_version(self) -> int:
        return self._policy_version

    @property
    def restarts(self) -> int:
        return sum(s.restarts for s in self.slots)

    def generate(self, requests: list[GenerationRequest], seed: int | None = None,
                 sampling: SamplingConfig | None = None) -> list[RolloutGroup]:
        """With `seed`, worker k reseeds its sampler with `seed + k` first: reproducible rollouts. With
        `sampling`, the workers sample this call with those settings (evaluation during training)."""
        return self.submit(requests, seed, sampling).result()

    def submit(self, requests: list[GenerationRequest], seed: int | None = None,
               sampling: SamplingConfig | None = None) -> "PendingGeneration":
        """Starts `generate` and returns at once. The calls are queued on the actors now, so a later
        `update_weights` lands after this generation: it samples with the weights of submission time."""
        return PendingGeneration(self, "generate", requests, seed, sampling)

    def generate_greedy(self, requests: list[GenerationRequest]) -> list[RolloutGroup]:
        return PendingGeneration(self, "generate_greedy", requests).result()

    @property
    def engine_workers(self) -> int:
        """vLLM workers over all engines: each takes one rank of a weight-transfer group."""
        return len(self.slots) * self.workers_per_engine

    def transfer_client(self):
        """vLLM's weight-sync client over the current actors (for WeightSender)."""
        from .weight_transfer.client import RolloutActorsClient

        return RolloutActorsClient([s.actor for s in self.slots], self.workers_per_engine)

    def set_policy_version(self, version: int) -> None:
        """The version the actors hold after an update that did not go through `update_weights`."""
        with self._lock:
            self._policy_version = int(version)

    def replace_dead(self) -> bool:
        """Pings every actor and replaces those that are gone; True when any was."""
        import ray

        replaced = False
        for slot in list(self.slots):
            actor = slot.actor
            try:
                ray.get(actor.ping.remote(), timeout=self.placement.ready_timeout_s)
            except ray.exceptions.RayActorError:
                self._replace_if_dead(slot, actor)
                replaced = True
        return replaced

    def sleep(self) -> None:
        """Colocation: every engine frees its GPU memory (vLLM sleep level 1) until `wake_up`."""
        import ray

        ray.get([s.actor.sleep.remote() for s in self.slots])

    def wake_up(self) -> None:
        import ray

        ray.get([s.actor.wake_up.remote() for s in self.slots])

    def update_weights(self, weights: dict[str, torch.Tensor], version: int) -> None:
        """Every worker loads the weights (one object-store copy); new samples carry `version`."""
        import ray

        self._load_everywhere("update_weights", ray.put(weights), version)

    def load_weights_file(self, path: str, version: int) -> None:
        """Every worker loads the safetensors file at `path` (readable from every rollout node); new samples
        carry `version`. The pool keeps the file for actors that replace dead ones, and deletes it once a
        newer one has been loaded, or at shutdown."""
        self._load_everywhere("load_weights_file", str(path), version)

    def _load_everywhere(self, method: str, payload, version: int) -> None:
        import ray

        with self._lock:
            previous, self._latest, self._policy_version = self._latest, (method, payload), int(version)
        calls = [(slot, slot.actor, getattr(slot.actor, method).remote(payload, int(version))) for slot in self.slots]
        for slot, actor, call in calls:
            try:
                ray.get(call)
            except ray.exceptions.RayActorError:
                self._replace_if_dead(slot, actor)
                # A replacement started by a generation waiting on another thread may hold older weights.
                ray.get(getattr(slot.actor, method).remote(payload, int(version)))
        self._discard(previous)

    def _discard(self, update: tuple[str, object] | None) -> None:
        if update is not None and update[0] == "load_weights_file":
            with self._file_lock:
                Path(update[1]).unlink(missing_ok=True)

    def prompt_logprobs(self, token_ids: list[int]) -> list[float]:
        import ray

        slot = self.slots[0]
        actor = slot.actor
        try:
            return ray.get(actor.prompt_logprobs.remote(token_ids))
        except ray.exceptions.RayActorError:
            self._replace_if_dead(slot, actor)
            return ray.get(slot.actor.prompt_logprobs.remote(token_ids))

    def ping(self) -> list[dict]:
        import ray

        return ray.get([s.actor.ping.remote() for s in self.slots])

    def shutdown(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        self.closing = True  # generations still waiting fail instead of restarting actors
        for slot in self.slots:
            try:
                ray.get(slot.actor.shutdown.remote(), timeout=60)
            except Exception as err:  # a dead or hung actor is killed below anyway
                log.warning("rollout worker %d did not shut down cleanly: %s", slot.index, err)
            ray.kill(slot.actor, no_restart=True)
        if self.placement.shared_group is None:  # the learner group removes a shared one
            for pg in self.placement_groups:
                remove_placement_group(pg)
        self.slots = []
        self._discard(self._latest)

    # ---- balancing and re-issue -------------------------------------------------------------
    def _assign(self, requests: list[GenerationRequest], greedy: bool) -> list[tuple[_Slot, list[int]]]:
        """Longest-first greedy: each request goes to the worker with the least pending work."""
        load = {s.index: s.pending_cost for s in self.slots}
        chosen: dict[int, list[int]] = {s.index: [] for s in self.slots}
        order = sorted(range(len(requests)), key=lambda i: -self._request_cost(requests[i], greedy))
        for i in order:
            target = min(load, key=lambda k: (load[k], k))
            chosen[target].append(i)
            load[target] += self._request_cost(requests[i], greedy)
        return [(self.slots[k], sorted(v)) for k, v in chosen.items() if v]

    def _request_cost(self, request: GenerationRequest, greedy: bool) -> float:
        sampling = self.engine_kwargs.get("sampling")
        max_tokens = sampling.for_mode(request.mode).max_tokens if sampling is not None else 1
        return (1 if greedy else request.n) * max_tokens

    def _chunk_cost(self, method: str, requests: list[GenerationRequest], indices: list[int]) -> float:
        return sum(self._request_cost(requests[i], method == "generate_greedy") for i in indices)

    def _submit(self, slot: _Slot, method: str, requests: list[GenerationRequest], indices: list[int], seed: int | None,
                sampling: SamplingConfig | None = None):
        args = [[requests[i] for i in indices]] + ([seed + slot.index] if seed is not None else [])
        kwargs = {"sampling": sampling} if sampling is not None else {}
        ref = getattr(slot.actor, method).remote(*args, **kwargs)
        self._add_pending(slot, self._chunk_cost(method, requests, indices))
        return ref

    def _add_pending(self, slot: _Slot, cost: float) -> None:
        with self._lock:
            slot.pending_cost += cost

    # ---- actors -----------------------------------------------------------------------------
    def _start_actor(self, index: int):
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        plan = self.engine_placements[index]
        env = dict(plan.env)
        if self.placement.cpu_binds:
            env["VLLM_CPU_OMP_THREADS_BIND"] = self.placement.cpu_binds[index]
        actor_cls = ray.remote(RolloutWorker).options(
            num_cpus=plan.actor_cpus,
            num_gpus=plan.actor_gpus,
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=self.placement_groups[index], placement_group_bundle_index=plan.bundle_index,
                placement_group_capture_child_tasks=plan.capture_child_tasks),
        )
        return actor_cls.remote(self.engine, {**self.engine_kwargs, **plan.engine_kwargs}, env)

    def _replace_if_dead(self, slot: _Slot, dead_actor) -> None:
        """Replace a dead actor in its placement group and bring it to the latest weights before any
        new work: the file path's here, the weight-transfer API's through `on_replaced`.

        Several failed calls may report the same death; only the first replaces the actor."""
        with slot.restart_lock:
            replaced = self._restart(slot, dead_actor)
        if replaced and self.on_replaced is not None:
            self.on_replaced()

    def _restart(self, slot: _Slot, dead_actor) -> bool:
        import ray

        if slot.actor is not dead_actor:
            return False
        try:
            ray.kill(dead_actor, no_restart=True)
        except Exception:  # already gone
            pass
        # Ray runs each actor in its own process group and kills that group when the actor dies
        # (RAY_process_group_cleanup_enabled, on in Ray 2.60): the dead actor's vLLM engine processes
        # go with it, even after a SIGKILL.
        actor = self._start_actor(slot.index)
        self._wait([actor.ping.remote()], f"rollout worker {slot.index} to restart")
        with self._file_lock:
            with self._lock:
                latest, version = self._latest, self._policy_version
            if latest is not None:
                method, payload = latest
                ray.get(getattr(actor, method).remote(payload, version))
        slot.actor = actor
        slot.restarts += 1
        with self._lock:
            self.membership += 1
        return True

    def _wait(self, refs, what: str):
        import ray

        try:
            return ray.get(refs, timeout=self.placement.ready_timeout_s)
        except ray.exceptions.GetTimeoutError as err:
            raise TimeoutError(
                f"RolloutPool: timed out after {self.placement.ready_timeout_s}s waiting for {what}; "
                "does the Ray cluster have the resources?"
            ) from err


class PendingGeneration:
    """A generation submitted to the pool's actors; `result()` waits, re-issuing work of dead actors."""

    def __init__(self, pool: RolloutPool, method: str, requests: list[GenerationRequest], seed: int | None = None,
                 sampling: SamplingConfig | None = None):
        self.pool, self.method, self.requests, self.seed, self.sampling = pool, method, requests, seed, sampling
        self.in_flight = {}
        for slot, indices in pool._assign(requests, greedy=(method == "generate_greedy")):
            self.in_flight[pool._submit(slot, method, requests, indices, seed, sampling)] = (slot, slot.actor, indices, 0)

    def result(self) -> list[RolloutGroup]:
        import ray

        pool, results = self.pool, [None] * len(self.requests)
        while self.in_flight:
            (ref,), _ = ray.wait(list(self.in_flight), num_returns=1)
            slot, actor, indices, attempt = self.in_flight.pop(ref)
            try:
                groups = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                if pool.closing:
                    raise RuntimeError("the rollout pool was shut down during generation") from err
                if attempt >= pool.max_reissues:
                    raise RuntimeError(f"rollout worker {slot.index} died {attempt + 1} times on the same requests") from err
                log.warning("rollout worker %d died (%s); restarting it and re-issuing %d requests", slot.index, err, len(indices))
                pool._replace_if_dead(slot, actor)
                ref = pool._submit(slot, self.method, self.requests, indices, self.seed, self.sampling)
                self.in_flight[ref] = (slot, slot.actor, indices, attempt + 1)
                continue
            finally:
                pool._add_pending(slot, -pool._chunk_cost(self.method, self.requests, indices))
            for i, group in zip(indices, groups):
                results[i] = group
        return results  # type: ignore[return-value]
