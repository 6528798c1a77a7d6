"""Connect to the Ray cluster in RAY_ADDRESS (as under `ray job submit`), or start a local one."""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def init_ray() -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        # Under `ray job submit` the job's runtime_env (working_dir included) is already in force:
        # passing one here would overwrite the user's.
        ray.init(address=address)
        log.info("connected to Ray cluster at %s", address)
    else:
        # address="local": a bare ray.init() joins any cluster `ray start` left on this machine (another
        # user's on a shared box, whose `ray stop` then kills this run's actors).
        ray.init(address="local", include_dashboard=False, log_to_driver=True)
        log.info("started a local Ray instance (set RAY_ADDRESS to use an existing cluster)")


def ray_node_count() -> int:
    """Alive nodes in the cluster this process is connected to."""
    import ray

    return sum(1 for node in ray.nodes() if node["Alive"])
