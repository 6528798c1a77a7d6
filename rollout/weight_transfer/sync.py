"""The driver's side of weight updates: the learner's turn, then the new weights into every rollout engine.

`training()` wraps the learner step: the weights are in flux (a replaced rollout actor waits for the
update instead of receiving half-stepped weights), and colocated engines sleep (vLLM sleep mode).
`update(version)` then brings every engine to the learner's weights:

- `BroadcastSync`, vLLM's weight-transfer API: trainer rank 0 (`TrainerSide`) and every vLLM worker of
  every engine form one group; rank 0 streams the weights in buckets while the actors receive. The
  group is formed at the first update and formed again whenever the pool replaced an actor (a new
  process cannot join an existing gloo or NCCL group). A replacement is brought to the latest weights
  before it gets work: the pool calls `resync`, which forms the group and sends. If an update fails
  because an actor died, the dead actors are replaced and the update is sent again.
- `FileSync`, `rollout.weight_transfer: file`: the pool's safetensors-file path.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Protocol

import torch

from .plan import TransferPlan, weight_metadata

log = logging.getLogger(__name__)
Weights = Callable[[], dict[str, torch.Tensor]]  # the learner's current weights by Hugging Face name


class TrainerSide(Protocol):
    """The trainer ranks, seen from the driver (one in-process rank today; a learner group later)."""

    def endpoint(self) -> tuple[str, int]:
        """Address and free port where trainer rank 0 will listen."""

    def open(self, plan: TransferPlan, client) -> None:
        """Every rank builds its WeightSender; rank 0 meets the rollout workers (blocks until they join)."""

    def send(self, version: int) -> None:
        """Every rank iterates its weights in lockstep; rank 0 streams them."""

    def close(self) -> None: ...


class LocalTrainer:
    """Trainer rank 0 in this process: the driver, while the learner lives there."""

    def __init__(self, weights: Weights):
        self.weights, self.sender = weights, None

    def endpoint(self) -> tuple[str, int]:
        """This node's address as Ray knows it (the one the rollout actors reach it by), and a free port."""
        import ray
        from vllm.utils.network_utils import get_ip, get_open_port

        return ray.util.get_node_ip_address() if ray.is_initialized() else get_ip(), get_open_port()

    def open(self, plan: TransferPlan, client) -> None:
        from .sender import WeightSender

        self.close()
        self.sender = WeightSender(plan, 0, client)

    def send(self, version: int) -> None:
        weights = self.weights()
        self.sender.send(weights.items(), weight_metadata(weights), version)

    def close(self) -> None:
        if self.sender is not None:
            self.sender.close()
            self.sender = None


class WeightSync:
    def __init__(self, pool, colocated: bool = False):
        self.pool, self.colocated = pool, colocated
        self._lock = threading.RLock()

    @contextlib.contextmanager
    def training(self):
        with self._lock:
            if self.colocated:
                self.pool.sleep()
            try:
                yield
            finally:
                if self.colocated:
                    self.pool.wake_up()

    def update(self, version: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FileSync(WeightSync):
    def __init__(self, pool, weights: Weights, colocated: bool = False):
        super().__init__(pool, colocated)
        self.weights = weights

    def update(self, version: int) -> None:
        with self._lock:
            self.pool.update_weights(self.weights(), version)


class BroadcastSync(WeightSync):
    def __init__(self, pool, trainer: TrainerSide, backend: str, bucket_bytes: int, timeout_s: float,
                 colocated: bool = False, attempts: int = 3):
        super().__init__(pool, colocated)
        self.trainer, self.backend, self.bucket_bytes, self.timeout_s = trainer, backend, bucket_bytes, timeout_s
        self.attempts = attempts
        self._version = pool.policy_version  # what the trainer holds; the engines start with it
        self._group = None  # pool.membership when the group was formed
        self._delivered = (pool.membership, self._version)
        self._syncing = False
        pool.on_replaced = self.resync

    def update(self, version: int) -> None:
        with self._lock:
            self._version = int(version)
            self._sync()

    def resync(self) -> None:
        """The pool replaced an actor: form the group again and send it the latest weights. Inside a
        failing update (same thread) this returns at once; the update's next attempt does it."""
        with self._lock:
            if not self._syncing:
                self._sync()

    def close(self) -> None:
        self.pool.on_replaced = None
        self.trainer.close()

    def _sync(self) -> None:
        self._syncing = True
        try:
            for attempt in range(1, self.attempts + 1):
                if self._delivered == (self.pool.membership, self._version):
                    return
                try:
                    if self._group != self.pool.membership:
                        self._open()
                    self.trainer.send(self._version)
                except Exception as err:
                    self._group = None
                    self.trainer.close()
                    if attempt == self.attempts or not self.pool.replace_dead():
                        raise
                    log.warning("weight update %d failed (%s); dead rollout actors replaced, sending again",
                                self._version, err)
                    continue
                self.pool.set_policy_version(self._version)
                self._delivered = (self._group, self._version)
        finally:
            self._syncing = False

    def _open(self) -> None:
        membership = self.pool.membership  # read first: a replacement while forming makes the next attempt re-form
        address, port = self.trainer.endpoint()
        plan = TransferPlan(self.backend, address, port, 1 + self.pool.engine_workers, self.bucket_bytes, self.timeout_s)
        self.trainer.open(plan, self.pool.transfer_client())
        self._group = membership
        log.info("weight transfer group formed: %s, %d ranks, trainer rank 0 at %s:%d", plan.backend,
                 plan.world_size, address, port)
