"""Faults and placement in a real training run: rollout and learner actors on different nodes of a
two-node Ray cluster (`ray.cluster_utils.Cluster`), and a rollout actor killed mid-generation there.
Dead reward workers: tests/test_rewards_pool.py."""
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import process_scan
import pytest

BIN = Path(sys.executable).parent
SHORT = ["train.prompts_per_step=4", "rollout.samples_per_prompt=4", "rollout.reasoning.max_tokens=24",
         "rollout.non_reasoning.max_tokens=24", "rewards.num_workers=1"]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _processes(pattern: str) -> list[process_scan.SeenProcess]:
    """Our own live processes matching `pattern`: the run's local Ray cluster is started by the run,
    so its actors are our descendants; other jobs on the machine are never touched."""
    return [p for p in process_scan.descendants() if not p.zombie and re.search(pattern, p.cmdline)]


class Killer(threading.Thread):
    """SIGKILLs, once each, the first of our processes matching each pattern after the run's first step."""

    def __init__(self, run_dir: Path, patterns: list[str]):
        super().__init__(daemon=True)
        self.run_dir, self.todo, self.killed, self.stop = run_dir, list(patterns), [], threading.Event()

    def run(self):
        metrics = self.run_dir / "metrics.jsonl"
        while self.todo and not self.stop.is_set():
            if metrics.is_file() and metrics.read_text().strip():
                for pattern in list(self.todo):
                    for proc in _processes(pattern)[:1]:
                        if process_scan.kill(proc.pid):
                            self.killed.append(pattern)
                            self.todo.remove(pattern)
            time.sleep(0.05)


@pytest.mark.slow
def test_a_two_node_run_replaces_a_rollout_actor_killed_mid_generation(tmp_path, tiny_checkpoint):
    """One CPU per node: the rollout actor's bundle and the learner rank's bundle (1 CPU each) can only be
    placed on different nodes. The weights go from learner rank 0 to the engine through vLLM's
    weight-transfer API (rollout.weight_transfer auto: the gloo engine), from one node to the other.
    Ray titles an actor's process `ray::RolloutWorker.generate` while the call runs, so the kill lands
    mid-generation (with asynchronous rollout, the generation of a step ahead). The actor is replaced in
    its bundle, the transfer group is formed again with it across the nodes, and the run completes."""
    from ray.cluster_utils import Cluster

    out, steps = tmp_path / "run", 5
    killer = Killer(out, [r"^ray::RolloutWorker\.generate"])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes = {cluster.head_node.node_id, cluster.add_node(num_cpus=1).node_id}
    try:
        cluster.wait_for_nodes()
        killer.start()
        done = subprocess.run(
            [str(BIN / "dualmode-rl"), "train", "--model", str(tiny_checkpoint), f"train.out={out}", f"train.steps={steps}",
             "train.save_every=5", "rollout.max_staleness=1", *SHORT],
            capture_output=True, text=True, timeout=900,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "RAY_ADDRESS": cluster.address})
    finally:
        killer.stop.set()
        killer.join()
        cluster.shutdown()
    assert done.returncode == 0, done.stderr[-4000:]
    rollout_node = re.search(r"rollout worker 0: pid \d+ on Ray node (\w+)", done.stderr).group(1)
    learner_node = re.search(r"learner rank 0: pid \d+ on Ray node (\w+)", done.stderr).group(1)
    assert {rollout_node, learner_node} == nodes
    assert killer.killed, "the rollout actor was never caught generating"
    metrics = _metrics(out)
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))
    assert metrics[-1]["rollout/restarts"] == 1 and "restarting it and re-issuing" in done.stderr
    assert (out / "checkpoints" / "latest").read_text() == f"step_{steps:06d}"
