"""Weight updates land: after every kind of update, through the safetensors file or through vLLM's
weight-transfer API with dualmode-rl's shm engine, vLLM's prompt logprobs equal a transformers
model holding the same weights (fp32). These also guard the private vLLM internals the CPU path relies
on (rollout/vllm_weight_sync.py): if an upgrade changes how CPU linears are packed, they fail loudly.
"""
from __future__ import annotations

import os

import pytest
import torch

from dualmode_rl.rollout.hf_engine import HfEngine
from dualmode_rl.rollout.modes import SamplingConfig
from dualmode_rl.rollout.types import GenerationRequest
from rollout_fixtures import MAX_MODEL_LEN, free_port, perturb
from tolerances import network_logprob_tolerance

pytestmark = pytest.mark.slow
VISIBLE = 0.05  # a perturbation must move some log-prob by this much
BUCKET_BYTES = 64 * 1024  # a few dozen buckets for the tiny model: the bucket boundaries are exercised


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return HfEngine(str(tiny_model_dir), SamplingConfig(seed=0), max_model_len=MAX_MODEL_LEN, seed=0)


@pytest.fixture(scope="module")
def sequence(reference):
    prompt = reference.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tom has 12 apples and buys 7 more. How many?"}],
        add_generation_prompt=True, enable_thinking=True, tokenize=True, return_dict=False,
    )
    answer = reference.tokenizer.encode("12 + 7 = 19\n</think>\n\nThe answer is \\boxed{19}.")
    return list(prompt) + list(answer) + [reference.tokenizer.eos_token_id]


def weights_of(reference: HfEngine, only: str = "") -> dict[str, torch.Tensor]:
    """The reference's tensors named like `only`, by Hugging Face name, a tied LM head left out as a
    learner exports it (vLLM refuses a tied alias without the tensor it is tied to in one load)."""
    return {name: t.clone() for name, t in reference.model.state_dict().items()
            if only in name and not (name == "lm_head.weight" and reference.model.config.tie_word_embeddings)}


def changed(reference: HfEngine, seed: int, only: str = "") -> dict[str, torch.Tensor]:
    """Perturb the reference's parameters named like `only`; return them."""
    perturb(reference.model, 0.05, seed, only)
    return weights_of(reference, only)


def send_through_shm(engine, weights: dict[str, torch.Tensor], version: int) -> None:
    """Trainer rank 0 (this process) packs the weights into shared memory bucket by bucket, the
    engine's worker loads each. (The gloo engine's updates are checked in tests/test_rollout_pool.py.)"""
    from dualmode_rl.rollout.weight_transfer.client import EngineClient
    from dualmode_rl.rollout.weight_transfer.plan import TransferPlan, weight_metadata
    from dualmode_rl.rollout.weight_file import shared_memory_dir
    from dualmode_rl.rollout.weight_transfer.sender import WeightSender

    plan = TransferPlan("shm", "127.0.0.1", free_port(), 2, BUCKET_BYTES, timeout_s=120)
    sender = WeightSender(plan, 0, EngineClient(engine))
    try:
        sender.send(weights.items(), weight_metadata(weights), version)
    finally:
        sender.close()
    assert not list(shared_memory_dir().glob(f"dualmode_rl_weights_{os.getpid()}_*"))  # the segment is unlinked


def load_file(engine, weights, version):
    engine.update_weights(weights, version)


def max_gap(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


def assert_same_model(engine_logprobs: list[float], reference: HfEngine, sequence: list[int]) -> None:
    """vLLM's log-probs equal transformers' on the same weights, up to float32 rounding (tolerances.py)."""
    tol = network_logprob_tolerance(reference.model, [sequence])
    assert tol < VISIBLE / 10  # a stale weight (a change >= VISIBLE) cannot pass
    expected = reference.prompt_logprobs(sequence)[-len(engine_logprobs):]
    assert max_gap(engine_logprobs, expected) < tol


def test_vllm_matches_transformers_before_any_update(vllm_engine, reference, sequence):
    assert_same_model(vllm_engine.prompt_logprobs(sequence), reference, sequence)


@pytest.mark.parametrize("send", [load_file, send_through_shm], ids=["file", "shm"])
def test_full_update_then_partial_update_match_transformers(vllm_engine, reference, sequence, send):
    before = reference.prompt_logprobs(sequence)
    original = weights_of(reference)

    send(vllm_engine, changed(reference, seed=1), 1)
    after_full = reference.prompt_logprobs(sequence)
    assert max_gap(before, after_full) > VISIBLE, "the perturbation must change the model visibly"
    assert_same_model(vllm_engine.prompt_logprobs(sequence), reference, sequence)
    assert vllm_engine.policy_version == 1

    # A partial update: one decoder layer's MLP and the (tied) embedding / LM head only.
    partial = changed(reference, seed=2, only="layers.0.mlp") | changed(reference, seed=3, only="embed_tokens")
    assert "lm_head.weight" not in partial and len(partial) == 4
    send(vllm_engine, partial, 2)
    after_partial = reference.prompt_logprobs(sequence)
    assert max_gap(after_full, after_partial) > VISIBLE
    assert_same_model(vllm_engine.prompt_logprobs(sequence), reference, sequence)

    # Back to the original weights: also exact, and generation (not only scoring) uses them.
    reference.update_weights(original, version=3)
    send(vllm_engine, original, 3)
    assert_same_model(vllm_engine.prompt_logprobs(sequence), reference, sequence)
    (group,) = vllm_engine.generate_greedy([GenerationRequest("g", "What is 3 + 4?", "reasoning")])
    sample = group.samples[0]
    assert sample.policy_version == 3
    assert_same_model(sample.logprobs, reference, group.prompt_token_ids + sample.token_ids)


def test_a_killed_trainers_segment_is_removed_by_the_next_trainer(tmp_path):
    """SIGKILL skips the trainer's unlink; the next shm trainer on the node deletes segments whose pid is gone."""
    import subprocess

    from dualmode_rl.rollout.weight_transfer.shm_engine import SEGMENT_PREFIX, remove_orphans

    gone = subprocess.Popen(["true"])
    gone.wait()
    orphan, live = tmp_path / f"{SEGMENT_PREFIX}{gone.pid}_0", tmp_path / f"{SEGMENT_PREFIX}{os.getpid()}_0"
    for path in (orphan, live):
        path.write_bytes(b"\0")
    remove_orphans(tmp_path)
    assert not orphan.exists() and live.exists()
