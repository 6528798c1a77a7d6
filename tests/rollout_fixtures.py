"""Helpers for the rollout tests: the random-weight tiny Exaone4 model that conftest.py's `tiny_model_dir`
builds, and a trainer rank for two-rank weight-transfer tests. Import with `from rollout_fixtures import ...`
(pytest puts tests/ on sys.path)."""
from __future__ import annotations

import random
import socket
from pathlib import Path

import torch

TINY_SHAPE_KWARGS = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1
)
MAX_MODEL_LEN = 512


def arithmetic_corpus(lines: int = 400, seed: int = 0) -> list[str]:
    """A few hundred lines of arithmetic and code-ish text, enough to train a ~400-token BPE."""
    rng = random.Random(seed)
    out = []
    for i in range(lines):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        kind = i % 4
        if kind == 0:
            out.append(f"What is {a} + {b}? The answer is \\boxed{{{a + b}}}.")
        elif kind == 1:
            out.append(f"<think>\n{a} times {b} equals {a * b}\n</think>\n\nSo the result is {a * b}.")
        elif kind == 2:
            out.append(f"def add_{i}(x, y):\n    return x + y + {a}\n\nassert add_{i}(1, 2) == {a + 3}")
        else:
            out.append(f"Tom has {a} apples, buys {b} more and gives away {a // 2}. How many are left?")
    return out


def build_tiny_checkpoint(out_dir: Path, seed: int = 0) -> Path:
    """Random-weight tiny Exaone4 + trained BPE tokenizer, saved in Hugging Face format (fp32)."""
    from dualmode_rl.orchestration.bootstrap.model import TinyModelShape, build_tiny_model
    from dualmode_rl.orchestration.bootstrap.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(arithmetic_corpus(), vocab_size=400)
    model = build_tiny_model(tokenizer, TinyModelShape(**TINY_SHAPE_KWARGS), seed=seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@torch.no_grad()
def perturb(model: torch.nn.Module, scale: float, seed: int, only: str = "") -> None:
    """Add seeded noise to the parameters named like `only` (a tied tensor once)."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if only in name:
            p.add_(scale * torch.randn(p.shape, generator=gen))
