"""Guards the private vLLM internals that in-place weight updates rely on (see rollout/vllm_weight_sync.py).

After every kind of update, vLLM's prompt logprobs must equal a transformers model holding the same
weights (fp32). If a vLLM upgrade changes how CPU linears are packed, these tests fail loudly.
"""
from __future__ import annotations

import pytest
import torch

from dualmode_rl.rollout.hf_engine import HfEngine
from dualmode_rl.rollout.modes import SamplingConfig
from dualmode_rl.rollout.types import GenerationRequest
from rollout_fixtures import MAX_MODEL_LEN, tiny_model_dir, vllm_engine  # noqa: F401
from tolerances import network_logprob_tolerance

pytestmark = pytest.mark.slow
VISIBLE = 0.05  # a perturbation must move some log-prob by this much


@pytest.fixture(scope="module")
def reference(tiny_model_dir):  # noqa: F811
    return HfEngine(str(tiny_model_dir), SamplingConfig(seed=0), max_model_len=MAX_MODEL_LEN, seed=0)


@pytest.fixture(scope="module")
def sequence(reference):
    prompt = reference.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Tom has 12 apples and buys 7 more. How many?"}],
        add_generation_prompt=True, enable_thinking=True, tokenize=True, return_dict=False,
    )
    answer = reference.tokenizer.encode("12 + 7 = 19\n</think>\n\nThe answer is \\boxed{19}.")
    return list(prompt) + list(answer) + [reference.tokenizer.eos_token_id]


@torch.no_grad()
def perturb(reference: HfEngine, scale: float, seed: int, only: str = "") -> dict[str, torch.Tensor]:
    """Add noise to the reference model's parameters named like `only` (tied ones once); return them by HF name."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in reference.model.named_parameters():  # yields a tied tensor once
        if only in name:
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return {name: t.clone() for name, t in reference.model.state_dict().items() if only in name}


def max_gap(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b))


def assert_same_model(engine_logprobs: list[float], reference: HfEngine, sequence: list[int]) -> None:
    """vLLM's log-probs equal transformers' on the same weights, up to float32 rounding (tolerances.py)."""
    tol = network_logprob_tolerance(reference.model, [sequence])
    assert tol < VISIBLE / 10  # a stale weight (a change >= VISIBLE) cannot pass
    expected = reference.prompt_logprobs(sequence)[-len(engine_logprobs):]
    assert max_gap(engine_logprobs, expected) < tol


def test_vllm_matches_transformers_before_any_update(vllm_engine, reference, sequence):  # noqa: F811
    assert_same_model(vllm_engine.prompt_logprobs(sequence), reference, sequence)


def test_full_update_then_partial_update_match_transformers(vllm_engine, reference, sequence):  # noqa: F811
    before = reference.prompt_logprobs(sequence)
    original = {k: v.clone() for k, v in reference.model.state_dict().items()}

    full = perturb(reference, scale=0.05, seed=1)
    vllm_engine.update_weights(full, version=1)
    after_full = reference.prompt_logprobs(sequence)
    assert max_gap(before, after_full) > VISIBLE, "the perturbation must change the model visibly"
    assert_same_model(vllm_engine.prompt_logprobs(sequence), reference, sequence)
    assert vllm_engine.policy_version == 1

    # A partial update: one decoder layer's MLP and the (tied) embedding / LM head only.
    partial = perturb(reference, scale=0.05, seed=2, only="layers.0.mlp")
    partial |= perturb(reference, scale=0.05, seed=3, only="embed_tokens")
    assert "lm_head.weight" not in partial and len(partial) == 4
    vllm_engine.update_weights(partial, version=2)
    after_partial = reference.prompt_logprobs(sequence)
    assert max_gap(after_full, after_partial) > VISIBLE
    assert_same_model(vllm_engine.prompt_logprobs(sequence), reference, sequence)

    # Back to the original weights: also exact, and generation (not only scoring) uses them.
    reference.update_weights(original, version=3)
    vllm_engine.update_weights(original, version=3)
    assert_same_model(vllm_engine.prompt_logprobs(sequence), reference, sequence)
    (group,) = vllm_engine.generate_greedy([GenerationRequest("g", "What is 3 + 4?", "reasoning")])
    sample = group.samples[0]
    assert sample.policy_version == 3
    assert_same_model(sample.logprobs, reference, group.prompt_token_ids + sample.token_ids)
