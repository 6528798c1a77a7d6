"""Shared fixtures for the rollout tests: one random-weight tiny Exaone4 model and one vLLM engine
(with dualmode-rl's gloo weight-transfer engine, next to the file path), and a trainer rank for
two-rank weight-transfer tests.

Import the fixtures into a test module with `from rollout_fixtures import ...` (pytest puts tests/ on sys.path).
Engines are session-scoped because each vLLM start costs ~25 s on this machine.
"""
from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest
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


_BUILT: dict[str, object] = {}


def _once(key: str, build, request, cleanup=None):
    if key not in _BUILT:
        _BUILT[key] = build()
        if cleanup is not None:
            request.config.add_cleanup(lambda: cleanup(_BUILT.pop(key)))
    return _BUILT[key]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, request) -> Path:
    return _once("model_dir", lambda: build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_exaone4")), request)


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_dir, request):
    """One vLLM engine for the whole run. Tests that change its weights put the original ones back."""
    pytest.importorskip("vllm")
    from dualmode_rl.rollout.engine import VllmEngine
    from dualmode_rl.rollout.modes import SamplingConfig

    def build():
        return VllmEngine(str(tiny_model_dir), SamplingConfig(seed=0), max_model_len=MAX_MODEL_LEN, seed=0,
                          weight_transfer="gloo")

    return _once("vllm_engine", build, request, cleanup=lambda engine: engine.shutdown())


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


def fsdp_policy(model_dir: Path, rank: int, world_size: int, port: int, seed: int):
    """Joins a gloo learner group and returns the perturbed model sharded with FSDP2 (each decoder
    layer, then the root), as a data-parallel learner holds it."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    perturb(model, 0.05, seed)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def gathered_weights(model: torch.nn.Module):
    """(name, full tensor) one parameter at a time: every rank must iterate in step (all-gathers)."""
    return ((name, p.full_tensor()) for name, p in model.named_parameters())


def weight_meta(model: torch.nn.Module):
    return [(name, p.dtype, tuple(p.shape)) for name, p in model.named_parameters()]


def trainer_rank(model_dir: str, rank: int, world_size: int, learner_port: int, plan, seed: int, version: int) -> None:
    """A non-sending trainer rank in its own process: gathers in step with rank 0, sends nothing."""
    import torch.distributed as dist

    from dualmode_rl.rollout.weight_transfer.sender import WeightSender

    model = fsdp_policy(Path(model_dir), rank, world_size, learner_port, seed)
    sender = WeightSender(plan, rank, client=None)
    sender.send(gathered_weights(model), weight_meta(model), version)
    sender.close()
    dist.destroy_process_group()
