"""Seeded generation repeats exactly: the basis of exact resume."""
from __future__ import annotations

import pytest

from rollout.hf_engine import HfEngine
from rollout.types import NON_REASONING, REASONING, GenerationRequest
from rollout_fixtures import tiny_model_dir, vllm_engine  # noqa: F401

REQUESTS = [GenerationRequest("a", "Tom has 5 apples.", REASONING, n=4),
            GenerationRequest("b", "Write f(x).", NON_REASONING, n=4)]


def tokens(groups):
    return [[s.token_ids for s in g.samples] for g in groups]


@pytest.mark.slow
def test_vllm_seeded_generation_repeats(vllm_engine):  # noqa: F811
    first = tokens(vllm_engine.generate(REQUESTS, seed=7))
    vllm_engine.generate(REQUESTS)  # advances the sampler's RNG
    assert tokens(vllm_engine.generate(REQUESTS, seed=7)) == first
    assert tokens(vllm_engine.generate(REQUESTS, seed=8)) != first


def test_hf_seeded_generation_repeats(tiny_model_dir):  # noqa: F811
    engine = HfEngine(str(tiny_model_dir))
    first = tokens(engine.generate(REQUESTS, seed=7))
    engine.generate(REQUESTS)
    assert tokens(engine.generate(REQUESTS, seed=7)) == first
