"""vLLM's `VLLMWeightSyncClient` over dualmode-rl's rollout actors (rollout/worker.py).

Picklable (Ray actor handles and numbers), so the driver can hand it to whichever process is trainer
rank 0. Each call goes to every actor at once (non-blocking Ray calls) and waits for all of them.
Every actor runs one vLLM engine of `workers_per_actor` workers (its tensor-parallel ranks), so the
actors' engines take consecutive ranks in the transfer group: engine k's workers start at
1 + k * workers_per_actor.
"""
from __future__ import annotations


class RolloutActorsClient:
    def __init__(self, actors: list, workers_per_actor: int):
        self.actors = list(actors)
        self.workers_per_actor = workers_per_actor
        self.version: int | None = None  # set by WeightSender.send: the label of the weights being sent

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        infos = [dict(init_info) for _ in self.actors]
        if "rank_offset" in init_info:  # rendezvous backends (gloo, nccl); ipc has no ranks
            for k, info in enumerate(infos):
                info["rank_offset"] = init_info["rank_offset"] + k * self.workers_per_actor
        _wait([actor.transfer_init.remote(info) for actor, info in zip(self.actors, infos)])

    def start_weight_update(self) -> None:
        _wait([actor.transfer_start.remote() for actor in self.actors])

    def update_weights(self, update_info) -> None:
        _wait([actor.transfer_receive.remote(update_info) for actor in self.actors])

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        version = int(weight_version) if weight_version is not None else self.version
        if version is None:
            raise RuntimeError("RolloutActorsClient: no version for the weights being finished")
        _wait([actor.transfer_finish.remote(version) for actor in self.actors])


def _wait(calls: list) -> None:
    import ray

    ray.get(calls)


class EngineClient:
    """The same client over one in-process VllmEngine (tests, benchmarks, scripts without Ray)."""

    def __init__(self, engine):
        self.engine = engine
        self.version: int | None = None

    def init_weight_transfer_engine(self, init_info: dict) -> None:
        self.engine.init_weight_transfer(init_info)

    def start_weight_update(self) -> None:
        self.engine.start_weight_update()

    def update_weights(self, update_info) -> None:
        self.engine.receive_weights(update_info)

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self.engine.finish_weight_update(int(weight_version) if weight_version is not None else self.version)
