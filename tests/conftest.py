"""Shared fixtures: one tiny bootstrap checkpoint per test session (real tokenizer, template, SFT)."""
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
        torch_threads=1,
    )


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from dualmode_rl.orchestration.bootstrap import bootstrap

    return bootstrap(tiny_bootstrap_config(), tmp_path_factory.mktemp("bootstrap") / "tiny")
