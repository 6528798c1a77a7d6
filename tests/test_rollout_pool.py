"""RolloutPool with real Ray actors running vLLM, laid out colocated in a learner group's placement group:
ordering, weight updates (the file path and vLLM's weight-transfer API with the gloo engine), versions,
what enters the object store, actor restarts, sleep around the learner step."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from dualmode_rl.rollout.hf_engine import HfEngine
from dualmode_rl.rollout.modes import ModeSampling, SamplingConfig
from dualmode_rl.rollout.pool import RolloutPool
from dualmode_rl.rollout.types import NON_REASONING, REASONING, GenerationRequest
from rollout_fixtures import MAX_MODEL_LEN
from tolerances import network_logprob_tolerance

SAMPLING = SamplingConfig(reasoning=ModeSampling(0.6, 0.95, 128), non_reasoning=ModeSampling(0.4, 0.95, 64))


def test_assign_balances_pending_work_longest_first():
    """Unit test of the balancing rule only (no Ray): fake slots with pending work."""
    from dualmode_rl.rollout.pool import _Slot

    pool = RolloutPool.__new__(RolloutPool)
    pool.engine_kwargs = {"sampling": SAMPLING}
    pool.slots = [_Slot(0, None, pending_cost=1000.0), _Slot(1, None)]
    requests = [GenerationRequest(f"r{i}", "p", REASONING if i % 2 else NON_REASONING, n=8) for i in range(6)]
    assignment = {slot.index: idx for slot, idx in pool._assign(requests, greedy=False)}
    load = {k: 1000.0 * (k == 0) + sum(pool._request_cost(requests[i], False) for i in v) for k, v in assignment.items()}
    assert sorted(i for v in assignment.values() for i in v) == list(range(6))
    assert abs(load[0] - load[1]) <= 8 * 128


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def colocated_learner(ray_session, tiny_model_dir):
    """A one-rank learner group laid out for `rollout.placement: colocated`: its bundle (learner rank 0's
    half CPU and the rollout actor's) also holds the module's pool. On GPUs the bundle holds the one GPU
    both share; here the layout is the same with CPUs only. The other half of the two CPUs is left for
    the two-rank learner group below."""
    from dualmode_rl.orchestration.components import learner_config, learner_placement
    from dualmode_rl.orchestration.config import load_config
    from dualmode_rl.orchestration.learner_group import LearnerGroup

    cfg = load_config(None, [f"model={tiny_model_dir}", "rollout.placement=colocated", "learner.cpus_per_worker=0.5",
                             "rollout.cpus_per_worker=0.5", "algorithm.beta=0"])
    learner = LearnerGroup(learner_config(cfg), learner_placement(cfg))
    yield cfg, learner
    learner.shutdown()


@pytest.fixture(scope="module")
def pool(colocated_learner, tiny_model_dir):
    from dualmode_rl.orchestration.components import pool_placement

    cfg, learner = colocated_learner
    engine_kwargs = dict(model_path=str(tiny_model_dir), sampling=SAMPLING, max_model_len=MAX_MODEL_LEN, seed=0,
                         weight_transfer="gloo")
    p = RolloutPool(num_workers=1, engine_kwargs=engine_kwargs, placement=pool_placement(cfg, learner))
    yield p
    p.shutdown()


class Weights:
    """The trainer's current weights, as a learner would hand them to the weight sync."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    def __call__(self) -> dict[str, torch.Tensor]:
        return self.tensors


@pytest.fixture(scope="module")
def broadcast(pool):
    from dualmode_rl.rollout.weight_transfer.sync import BroadcastSync, LocalTrainer

    weights = Weights({})
    sync = BroadcastSync(pool, LocalTrainer(weights), "gloo", bucket_bytes=256 * 1024, timeout_s=300)
    yield sync, weights
    sync.close()


PERTURBED = ("layers.1.", "embed_tokens")


def touched(name: str) -> bool:
    return any(part in name for part in PERTURBED)


def logprob_gap(pool: RolloutPool, reference: HfEngine, seq: list[int]) -> float:
    """vLLM in the actor against transformers; equal up to float32 rounding on the same weights."""
    return max(abs(a - b) for a, b in zip(pool.prompt_logprobs(seq), reference.prompt_logprobs(seq)))


@pytest.fixture(scope="module")
def perturbed_reference(tiny_model_dir):
    """The checkpoint with one decoder layer and the (tied) embedding changed."""
    ref = HfEngine(str(tiny_model_dir), SAMPLING, max_model_len=MAX_MODEL_LEN)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in ref.model.named_parameters():
            if touched(name):
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return ref


@pytest.mark.slow
def test_pool_generates_in_order_and_carries_policy_versions(pool, perturbed_reference):
    requests = [
        GenerationRequest("a", "What is 2 + 3?", REASONING, n=2),
        GenerationRequest("b", "Add two numbers in Python.", NON_REASONING, n=3),
    ]
    before = pool.generate(requests)
    assert [g.request_id for g in before] == ["a", "b"] and [len(g.samples) for g in before] == [2, 3]
    assert {s.policy_version for g in before for s in g.samples} == {0}

    # A partial first update: on vLLM CPU the untouched layers must come back from the checkpoint.
    partial = {k: v for k, v in perturbed_reference.model.state_dict().items() if touched(k)}
    assert "lm_head.weight" not in partial and "model.layers.0.mlp.up_proj.weight" not in partial
    pool.update_weights(partial, version=1)
    after = pool.generate(requests)
    assert {s.policy_version for g in after for s in g.samples} == {1}
    seq = after[0].prompt_token_ids + after[0].samples[0].token_ids
    assert logprob_gap(pool, perturbed_reference, seq) < network_logprob_tolerance(perturbed_reference.model, [seq]), \
        "the actor's engine must compute with the new weights"
    assert pool.ping()[0]["policy_version"] == 1


def object_store_bytes_created(ray) -> int:
    """Bytes ever created in the Ray object store, cluster-wide (Ray's own memory stats; internal API)."""
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    state = get_state_from_address(ray.get_runtime_context().gcs_address)
    return get_memory_info_reply(state).store_stats.cumulative_created_bytes


@pytest.mark.slow
def test_updates_through_the_weight_transfer_api_or_a_file_put_nothing_state_dict_sized_in_the_object_store(
        pool, ray_session, broadcast, perturbed_reference, tmp_path):
    from dualmode_rl.rollout.weight_file import write_weights_file

    sync, weights = broadcast
    state = {k: v for k, v in perturbed_reference.model.state_dict().items() if k != "lm_head.weight"}  # tied
    size = sum(t.numel() * t.element_size() for t in state.values())
    weights.tensors = state
    before = object_store_bytes_created(ray_session)
    sync.update(version=2)
    streamed = object_store_bytes_created(ray_session) - before
    older = write_weights_file({k: torch.zeros_like(v) for k, v in state.items()}, tmp_path)
    pool.load_weights_file(str(older), version=3)
    latest = write_weights_file(state, tmp_path)
    pool.load_weights_file(str(latest), version=4)  # the file path: learner rank 0 wrote the file
    assert not older.exists() and latest.exists()  # kept for replacements until a newer file arrives
    through_file = object_store_bytes_created(ray_session) - before - streamed
    pool.update_weights(state, version=5)  # a state dict through the object store, for contrast: the test can tell
    through_store = object_store_bytes_created(ray_session) - before - streamed - through_file
    assert max(streamed, through_file) < size / 10 <= size <= through_store
    assert pool.ping()[0]["policy_version"] == 5


@pytest.mark.slow
def test_killed_actor_is_restarted_with_latest_weights_and_requests_complete(pool, ray_session, broadcast,
                                                                             perturbed_reference):
    """The weights came through the weight-transfer API: the replacement joins a new transfer group and
    receives them before it takes the re-issued requests."""
    sync, weights = broadcast
    weights.tensors = {k: v for k, v in perturbed_reference.model.state_dict().items() if k != "lm_head.weight"}
    sync.update(version=4)
    requests = [GenerationRequest(f"k{i}", f"What is {i} + {i}?", REASONING, n=8) for i in range(32)]
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.setdefault("groups", pool.generate(requests)))
    runner.start()
    time.sleep(1.5)  # the batched call (~32k tokens) is now running inside the actor
    ray_session.kill(pool.slots[0].actor)
    runner.join(timeout=300)
    assert not runner.is_alive(), "generate did not finish after the actor was killed"
    groups = outcome["groups"]
    assert pool.restarts == 1
    assert [g.request_id for g in groups] == [r.request_id for r in requests]
    assert all(len(g.samples) == 8 for g in groups)
    assert {s.policy_version for g in groups for s in g.samples} == {4}
    seq = groups[0].prompt_token_ids + groups[0].samples[0].token_ids
    gap = max(abs(a - b) for a, b in zip(pool.prompt_logprobs(seq), perturbed_reference.prompt_logprobs(seq)))
    assert gap < network_logprob_tolerance(perturbed_reference.model, [seq]), \
        "the restarted actor must hold the latest weights, not the checkpoint's"


@pytest.mark.slow
def test_a_two_rank_fsdp2_learner_group_is_trainer_rank_0(pool, ray_session, perturbed_reference, tiny_model_dir):  # noqa: F811
    """The loop's path: learner rank 0 (a Ray actor) joins the transfer group and streams what both FSDP2
    ranks gather in lockstep (the tied LM head once); rank 1 only gathers; nothing state-dict sized enters
    the object store. The engine held perturbed weights; afterwards it computes with the learner's."""
    from dualmode_rl.orchestration.learner_group import LearnerGroup, LearnerPlacement
    from dualmode_rl.rl.learner import LearnerConfig
    from dualmode_rl.rollout.weight_transfer.sync import BroadcastSync

    checkpoint = HfEngine(str(tiny_model_dir), SAMPLING, max_model_len=MAX_MODEL_LEN)
    (group,) = pool.generate([GenerationRequest("g", "What is 4 + 4?", REASONING, n=1)])
    seq = group.prompt_token_ids + group.samples[0].token_ids
    tol = network_logprob_tolerance(checkpoint.model, [seq])
    assert logprob_gap(pool, checkpoint, seq) > 10 * tol  # the perturbed weights of the tests above
    learner = LearnerGroup(LearnerConfig(model_path=str(tiny_model_dir), beta=0.0, strategy="fsdp2"),
                           LearnerPlacement(num_workers=2, cpus_per_worker=0.5))
    sync = BroadcastSync(pool, learner, "gloo", bucket_bytes=256 * 1024, timeout_s=300)
    try:
        size = sum(t.numel() * t.element_size() for t in checkpoint.model.parameters())
        before = object_store_bytes_created(ray_session)
        sync.update(version=7)
        assert object_store_bytes_created(ray_session) - before < size / 10
    finally:
        sync.close()
        learner.shutdown()
    assert pool.ping()[0]["policy_version"] == 7
    assert logprob_gap(pool, checkpoint, seq) < tol


@pytest.mark.slow
def test_colocated_engines_live_in_the_learner_groups_bundle_and_sleep_through_its_step(pool, colocated_learner):
    """`rollout.placement: colocated` as the loop lays it out (the module's pool): the engine's actor runs
    in the learner group's placement group (the actor restarted above went back into it) and the pool
    made none of its own; it sleeps while the learner steps (vLLM's CPU backend frees no memory, but the
    scheduler pauses and the executor sleeps). Then learner rank 0 of that group sends the weights and
    the engine generates with them."""
    from dualmode_rl.orchestration.components import build_weight_sync

    cfg, learner = colocated_learner
    assert pool.placement_groups == [learner.placement_group]
    assert learner.placement_group.bundle_specs == [{"CPU": 1.0}]  # learner rank 0's half and the actor's
    assert pool.ping()[0]["placement_group"] == learner.placement_group.id.hex()
    sync = build_weight_sync(cfg, pool, learner, "gloo")
    try:
        with sync.training():
            assert [info["sleeping"] for info in pool.ping()] == [True]
        assert [info["sleeping"] for info in pool.ping()] == [False]
        sync.update(version=9)
    finally:
        sync.close()
    (group,) = pool.generate([GenerationRequest("w", "What is 2 + 3?", REASONING, n=2)])
    assert [s.policy_version for s in group.samples] == [9, 9]
