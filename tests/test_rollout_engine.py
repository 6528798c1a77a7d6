"""VllmEngine and HfEngine generation: both modes, n samples, decodable tokens, logprob semantics."""
from __future__ import annotations

import pytest

from dualmode_rl.rollout.hf_engine import HfEngine
from dualmode_rl.rollout.modes import ModeSampling, SamplingConfig, render_prompt_ids
from dualmode_rl.rollout.types import NON_REASONING, REASONING, GenerationRequest
from rollout_fixtures import MAX_MODEL_LEN, tiny_model_dir, vllm_engine  # noqa: F401

REQUESTS = [
    GenerationRequest("r0", "What is 2 + 3?", REASONING, n=3),
    GenerationRequest("n0", "Write a function that adds two numbers.", NON_REASONING, n=2),
    GenerationRequest("r1", [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tom has 5 apples."}],
                      REASONING, n=1),
]


def test_sampling_config_validates_and_picks_mode():
    cfg = SamplingConfig()
    assert cfg.for_mode(REASONING).temperature == 0.6 and cfg.for_mode(REASONING).top_p == 0.95
    assert cfg.for_mode(NON_REASONING).temperature < 0.6
    with pytest.raises(ValueError, match="unknown generation mode"):
        cfg.for_mode("thinking")
    with pytest.raises(ValueError, match="top_p"):
        ModeSampling(0.5, 0.0, 10)


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


@pytest.mark.slow
def test_vllm_sampling_logprobs_are_raw_model_logprobs(vllm_engine):  # noqa: F811
    """At T=0.6 and top-p 0.95 the returned logprobs are the untempered model's (vLLM raw_logprobs)."""
    groups = vllm_engine.generate([GenerationRequest("t", "What is 2 + 3?", REASONING, n=2)])
    for sample in groups[0].samples:
        n = len(sample.token_ids)
        scored = vllm_engine.prompt_logprobs(groups[0].prompt_token_ids + sample.token_ids)[-n:]
        assert max(abs(a - b) for a, b in zip(sample.logprobs, scored)) < 1e-4


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


def test_hf_engine_generates_groups_with_raw_logprobs(hf_engine):
    groups = hf_engine.generate(REQUESTS)
    check_groups(hf_engine, groups, REQUESTS, 24)
    sample = groups[0].samples[0]
    scored = hf_engine.prompt_logprobs(groups[0].prompt_token_ids + sample.token_ids)[-len(sample.token_ids):]
    assert max(abs(a - b) for a, b in zip(sample.logprobs, scored)) < 1e-4


def test_hf_engine_update_weights_changes_scores_and_version(hf_engine):
    ids = render_prompt_ids(hf_engine.tokenizer, REQUESTS[0])
    original = {k: v.clone() for k, v in hf_engine.model.state_dict().items()}
    before = hf_engine.prompt_logprobs(ids)
    hf_engine.update_weights({k: v * 1.5 for k, v in original.items()}, version=7)
    assert max(abs(a - b) for a, b in zip(before, hf_engine.prompt_logprobs(ids))) > 1e-2
    assert hf_engine.generate_greedy(REQUESTS[:1])[0].samples[0].policy_version == 7
    with pytest.raises(KeyError, match="not in the model"):
        hf_engine.update_weights({"no.such.weight": original["model.norm.weight"]}, version=8)
    hf_engine.update_weights(original, version=0)


def test_hf_engine_processed_logprobs_are_temperature_scaled(tiny_model_dir):  # noqa: F811
    import torch

    sampling = SamplingConfig(reasoning=ModeSampling(0.5, 1.0, 8), non_reasoning=ModeSampling(0.5, 1.0, 8))
    engine = HfEngine(str(tiny_model_dir), sampling, max_model_len=MAX_MODEL_LEN, logprobs_mode="processed_logprobs")
    (group,) = engine.generate([GenerationRequest("p", "What is 2 + 3?", REASONING, n=2)])
    sample = group.samples[0]
    ids = torch.tensor([group.prompt_token_ids + sample.token_ids])
    with torch.no_grad():
        logits = engine.model(ids).logits[0, len(group.prompt_token_ids) - 1 : -1]
    expected = (logits / 0.5).log_softmax(-1).gather(-1, torch.tensor(sample.token_ids)[:, None]).squeeze(-1)
    assert max(abs(a - b) for a, b in zip(sample.logprobs, expected.tolist())) < 1e-4


def test_prompt_longer_than_the_context_names_the_request(hf_engine):
    with pytest.raises(ValueError, match="request 'long'.*max_model_len"):
        hf_engine.generate([GenerationRequest("long", "1 + 1 = 2. " * 200, REASONING, n=1)])
