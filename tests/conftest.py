"""Shared session fixtures: one tiny bootstrap checkpoint (real tokenizer, template, SFT), one random-weight
tiny Exaone4 model, and one vLLM engine on it (each vLLM start costs ~25 s on a 2-core machine)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def tiny_bootstrap_config():
    from dualmode_rl.orchestration.config import BootstrapConfig, ModelShape

    return BootstrapConfig(
        train_size=300, validation_size=20, test_size=40, sft_steps=30, sft_batch_size=16,
        vocab_size=400, shape=ModelShape(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1, sliding_window=16),
        torch_threads=1, code_share=0.3, max_operand=12,  # the tests' data: more code rows, larger numbers
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from dualmode_rl.orchestration.bootstrap import bootstrap

    return bootstrap(tiny_bootstrap_config(), tmp_path_factory.mktemp("bootstrap") / "tiny")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from rollout_fixtures import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_exaone4"))


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir):
    """One vLLM engine (with the shm weight-transfer engine) for the whole run. Tests that change its
    weights put the original ones back. Its engine core runs in a process of its own: in this process it
    would hold a torch.distributed group for the whole run, where learner tests make their own."""
    pytest.importorskip("vllm")
    from rollout_fixtures import MAX_MODEL_LEN

    from dualmode_rl.rollout.vllm_engine import VllmEngine
    from dualmode_rl.rollout.modes import SamplingConfig

    engine = VllmEngine(str(tiny_model_dir), SamplingConfig(seed=0), max_model_len=MAX_MODEL_LEN, seed=0,
                        weight_transfer="shm", in_process=False)
    yield engine
    engine.shutdown()
