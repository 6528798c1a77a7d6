"""The learner as a group of Ray actors: `num_workers` ranks in one placement group and one
torch.distributed process group (gloo on CPU, NCCL on GPU), each holding a `Learner` (rl/learner.py).

The driver only orchestrates: every rank gets the same batch (one object-store copy of token ids) and
takes its token-balanced shard; metrics come back from rank 0. No weights pass through the driver or
the object store. Weight updates (rollout/weight_transfer/sync.py) have every rank gather the policy
tensor by tensor, in lockstep (`Learner.iter_update`), and rank 0 either stream them in buckets to the
rollout engines through vLLM's weight-transfer API (the group is the sync's `TrainerSide`: rank 0's
WeightSender joins the transfer group, the other ranks' only iterate) or write them to one safetensors
file the rollout actors load (`sync_weights_to_file`). Checkpoints are written by the ranks themselves.

Calls that issue collectives (step, weight sync, save, load) run in each actor's default concurrency
group, one at a time and in the order this driver thread submits them, so every rank sees them in the
same order. `reference_logprobs` runs in a second group, beside a step, on the ranks' replicated
reference (ddp); with fsdp2 the ranks answer None and the step computes the reference itself.
"""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

from dualmode_rl.rl.batch import TrainingBatch
from dualmode_rl.rl.learner import Learner, LearnerConfig, resolve_device
from dualmode_rl.rl.micro_batches import shard_for_rank
from dualmode_rl.rollout.weight_file import write_weights_file

log = logging.getLogger(__name__)
REFERENCE_GROUP = "reference"


@dataclass
class LearnerPlacement:
    num_workers: int = 1
    gpus_per_worker: float = 0
    cpus_per_worker: float = 1
    torch_threads: int = 1  # per rank; 0 leaves torch's default
    strategy: str = "PACK"  # Ray placement strategy of the ranks' bundles
    ready_timeout_s: float = 600
    # Colocation (rollout/placement.py): the group's bundles also hold the rollout engines, and each rank
    # claims only its share of its bundle's GPU. None: a bundle() per rank, claimed whole.
    bundles: list[dict[str, float]] | None = None
    actor_gpus: float | None = None

    def bundle(self) -> dict[str, float]:
        return {"CPU": self.cpus_per_worker, **({"GPU": self.gpus_per_worker} if self.gpus_per_worker else {})}

    def group_bundles(self) -> list[dict[str, float]]:
        return self.bundles or [self.bundle()] * self.num_workers

    def rank_gpus(self) -> float:
        return self.gpus_per_worker if self.actor_gpus is None else self.actor_gpus


class LearnerWorker:
    """One rank: a Ray actor holding a Learner."""

    def __init__(self, rank: int, world_size: int, torch_threads: int):
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")  # reaches the driver's log
        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.rank, self.world_size = rank, world_size
        self.learner: Learner | None = None
        self.sender = None  # WeightSender while a weight-transfer group is open

    def where(self) -> dict:
        import ray

        return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "gpus": [str(g) for g in ray.get_gpu_ids()]}

    def rendezvous_address(self) -> str:
        """host:port for the process group's TCP store, on this (rank 0's) node."""
        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return f"{ray.util.get_node_ip_address()}:{port}"

    def start(self, config: LearnerConfig, address: str) -> str:
        import torch.distributed as dist

        device = resolve_device(config.device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://{address}",
                                rank=self.rank, world_size=self.world_size)
        self.learner = Learner(config)
        return str(self.learner.device)

    def step(self, batch: TrainingBatch) -> dict[str, float]:
        return self.learner.step(batch)

    def reference_logprobs(self, prompt_ids, completion_ids, modes) -> dict[int, list[float]] | None:
        """This rank's token-balanced share of the sequences, by index; None if the step computes them."""
        lengths = [len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)]
        mine = shard_for_rank(lengths, self.world_size, self.rank)
        if not mine:
            return {}
        out = self.learner.reference_logprobs([prompt_ids[i] for i in mine], [completion_ids[i] for i in mine],
                                              [modes[i] for i in mine])
        return None if out is None else dict(zip(mine, out))

    def sync_weights_to_file(self, directory: str | None) -> str | None:
        weights = self.learner.iter_update()
        if self.rank != 0:
            for _ in weights:  # take part in each gather
                pass
            return None
        return str(write_weights_file({name: tensor.to("cpu") for name, tensor in weights}, directory))

    # ---- vLLM's weight-transfer API (TrainerSide, through LearnerGroup)
    def open_transfer(self, plan, client) -> None:
        """Every rank builds its WeightSender; rank 0's joins the transfer group (blocks until the rollout
        workers do), the others only take part in the gathers."""
        from dualmode_rl.rollout.weight_transfer.sender import WeightSender

        self.close_transfer()
        self.sender = WeightSender(plan, self.rank, client if self.rank == 0 else None)

    def send_weights(self, version: int) -> None:
        weights = self.learner.iter_update()
        try:
            self.sender.send(weights, self.learner.update_metadata(), version)
        finally:
            for _ in weights:  # a send that failed midway still takes part in the other ranks' gathers
                pass

    def close_transfer(self) -> None:
        if self.sender is not None:
            self.sender.close()
            self.sender = None

    def save(self, checkpoint_dir: str) -> None:
        self.learner.save(checkpoint_dir)

    def load(self, checkpoint_dir: str) -> None:
        self.learner.load(checkpoint_dir)

    def shutdown(self) -> None:
        import torch.distributed as dist

        self.close_transfer()
        if dist.is_initialized():
            dist.destroy_process_group()


class LearnerGroup:
    def __init__(self, config: LearnerConfig, placement: LearnerPlacement | None = None,
                 weight_dir: str | None = None, wait: bool = True):
        """`weight_dir`: where rank 0 writes weight files (None: /dev/shm or the temp dir of its node).
        `wait=False` returns once the ranks are placed, with their start (imports, process group, model
        load) still running: the caller starts other actors meanwhile, then calls `wait_started`."""
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.placement = placement or LearnerPlacement()
        self.weight_dir = weight_dir
        n, bundles = self.placement.num_workers, self.placement.group_bundles()
        self.placement_group = placement_group(bundles, strategy=self.placement.strategy)
        self._wait(self.placement_group.ready(), f"placement group of bundles {bundles}")
        actor_cls = ray.remote(concurrency_groups={REFERENCE_GROUP: 1})(LearnerWorker)
        self.workers = [actor_cls.options(
            num_cpus=self.placement.cpus_per_worker, num_gpus=self.placement.rank_gpus(),
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.placement_group, placement_group_bundle_index=rank),
        ).remote(rank, n, self.placement.torch_threads) for rank in range(n)]
        address = self.workers[0].rendezvous_address.remote()  # Ray resolves it before each rank's start runs
        self._starting = [w.start.remote(config, address) for w in self.workers]
        if wait:
            self.wait_started()

    def wait_started(self) -> None:
        """Blocks until every rank has joined the process group and loaded the model."""
        if not self._starting:
            return
        devices = self._wait(self._starting, "learner ranks to start and load the model")
        self._starting = []
        for rank, (info, device) in enumerate(zip(self._wait([w.where.remote() for w in self.workers], "learners"), devices)):
            log.info("learner rank %d: pid %d on Ray node %s, device %s", rank, info["pid"], info["node"], device)

    def step(self, batch: TrainingBatch) -> dict[str, float]:
        return self._all("step", self._put(batch))[0]

    def reference_logprobs(self, prompt_ids: list[list[int]], completion_ids: list[list[int]],
                           modes: list[str]) -> list[list[float]] | None:
        """Learner.reference_logprobs over the ranks (each computes its share); safe beside `step`."""
        import ray

        args = [self._put(x) for x in (prompt_ids, completion_ids, modes)]
        parts = ray.get([w.reference_logprobs.options(concurrency_group=REFERENCE_GROUP).remote(*args)
                         for w in self.workers])
        if any(part is None for part in parts):
            return None
        merged = {i: values for part in parts for i, values in part.items()}
        return [merged[i] for i in range(len(completion_ids))]

    def sync_weights_to_file(self, version: int) -> str:
        """The current policy (Hugging Face names, LoRA merged) in a fresh safetensors file, written by rank 0;
        its path. The caller deletes the file when done with it."""
        path = self._all("sync_weights_to_file", self.weight_dir)[0]
        log.debug("policy version %d written to %s", version, path)
        return path

    # ---- TrainerSide (rollout/weight_transfer/sync.py): rank 0 is trainer rank 0 of the transfer group
    def endpoint(self) -> tuple[str, int]:
        """Rank 0's node address and a free port there, where it will listen for the rollout workers."""
        host, port = self._wait(self.workers[0].rendezvous_address.remote(), "learner rank 0").rsplit(":", 1)
        return host, int(port)

    def open(self, plan, client) -> None:
        self._all("open_transfer", plan, client)

    def send(self, version: int) -> None:
        self._all("send_weights", version)

    def close(self) -> None:
        """Every rank leaves the transfer group; a dead rank is reported, not raised (the group goes anyway)."""
        import ray

        for rank, ref in enumerate([w.close_transfer.remote() for w in self.workers]):
            try:
                ray.get(ref, timeout=60)
            except Exception as err:
                log.warning("learner rank %d did not close its weight transfer: %s", rank, err)

    def save(self, checkpoint_dir: str | Path) -> None:
        """`checkpoint_dir/policy` (Hugging Face folder) and `checkpoint_dir/trainer`, written by the ranks."""
        self._all("save", str(checkpoint_dir))

    def load(self, checkpoint_dir: str | Path) -> None:
        self._all("load", str(checkpoint_dir))

    def shutdown(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        for worker in self.workers:
            try:
                ray.get(worker.shutdown.remote(), timeout=60)
            except Exception as err:  # a dead or hung rank is killed below anyway
                log.warning("learner rank did not shut down cleanly: %s", err)
            ray.kill(worker, no_restart=True)
        remove_placement_group(self.placement_group)
        self.workers = []

    def _all(self, method: str, *args) -> list:
        import ray

        return ray.get([getattr(w, method).remote(*args) for w in self.workers])

    @staticmethod
    def _put(value):
        import ray

        return ray.put(value)

    def _wait(self, refs, what: str):
        import ray

        try:
            return ray.get(refs, timeout=self.placement.ready_timeout_s)
        except ray.exceptions.GetTimeoutError as err:
            raise TimeoutError(f"LearnerGroup: timed out after {self.placement.ready_timeout_s}s waiting for {what}; "
                               "does the Ray cluster have the resources?") from err
