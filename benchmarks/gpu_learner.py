"""The learner on one GPU against a plain transformers training loop, side by side in one run.

Model: the EXAONE-4.0-1.2B shape (hidden 2048, 30 layers, 32 heads, 8 KV heads, intermediate 4096,
vocab 102400, tied embeddings), random weights saved in bf16. Batch: --seqs sequences of exactly
--seq-len tokens (a 64-token prompt and its completion), one optimizer step per batch on both sides.

- dualmode-rl: `Learner.step` as a learner rank runs it. FSDP2 (`fully_shard` per decoder layer and on
  the root, a one-rank process group), bf16 compute with fp32 master weights and AdamW state,
  gradient checkpointing, the `packed` layout (padding-free rows of up to --micro-batch-tokens),
  flash-attention 2 when `flash_attn` imports (else sdpa), the AGAPO loss with beta 0 (no reference
  model, so both sides run the same network).
- plain: `AutoModelForCausalLM` in bf16 (parameters and AdamW state), --plain-micro-batch sequences per
  forward/backward, `model(input_ids, labels=...).loss`, sdpa, no checkpointing: the loop one writes
  first (ENVIRONMENT.md measured 26.8k tokens/s, 206 model TFLOP/s with it on an H100).

Model FLOP utilisation = model FLOPs per second / the bf16 matmul peak measured on this device in the
same run (an 8192^3 matmul; 1024^3 with --tiny). Model FLOPs per token: 6 x the matmul parameters
(decoder layers and LM head) + 6 x layers x heads x head_dim x seq_len (causal attention, QK^T and AV,
forward and backward, average key length seq_len / 2); recomputation is not counted. Tokens/s count
every position (prompt and completion).

Needs only torch and transformers (no vLLM, Ray, TRL, PEFT or datasets). On a CPU, `--tiny` runs the
same code on a tiny shape to check it end to end; its numbers mean nothing.

    python benchmarks/gpu_learner.py [--seqs 64 --seq-len 1024 --steps 5]
    python benchmarks/gpu_learner.py --tiny

The last line printed is JSON: tokens/s, model TFLOP/s, MFU and peak memory per side, and the ratio.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dualmode_rl.rl.batch import TrainingBatch  # noqa: E402
from dualmode_rl.rl.learner import Learner, LearnerConfig  # noqa: E402

PROMPT_TOKENS = 64
SHAPES = {
    "1.2b": dict(vocab_size=102400, hidden_size=2048, intermediate_size=4096, num_hidden_layers=30,
                 num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True),
}


def save_model(directory: Path, shape: dict, seq_len: int):
    from transformers import Exaone4Config, Exaone4ForCausalLM

    config = Exaone4Config(**shape, max_position_embeddings=max(seq_len, 2048), sliding_window=None,
                           layer_types=["full_attention"] * shape["num_hidden_layers"],
                           bos_token_id=0, eos_token_id=1, pad_token_id=2)
    torch.manual_seed(0)
    Exaone4ForCausalLM(config).to(torch.bfloat16).save_pretrained(directory)
    return config


def make_batch(seqs: int, seq_len: int, vocab: int) -> TrainingBatch:
    rng = random.Random(0)
    prompts, completions = [], []
    for _ in range(seqs):
        prompts.append([rng.randrange(3, vocab) for _ in range(PROMPT_TOKENS)])
        completions.append([rng.randrange(3, vocab) for _ in range(seq_len - PROMPT_TOKENS)])
    return TrainingBatch(prompts, completions, advantages=[rng.uniform(-1, 1) for _ in range(seqs)],
                         group_ids=list(range(seqs)), modes=["reasoning"] * seqs)


def model_flops_per_token(config, seq_len: int) -> float:
    layer = (config.hidden_size * config.head_dim * 2 * (config.num_attention_heads + config.num_key_value_heads)
             + 3 * config.hidden_size * config.intermediate_size)
    matmul_params = config.num_hidden_layers * layer + config.vocab_size * config.hidden_size
    attention = 6 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * seq_len
    return 6 * matmul_params + attention


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device, size: int, reps: int = 10) -> float:
    """bf16 matmul FLOP/s on this device, best of `reps`."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(reps + 1):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def timed_steps(step, steps: int, device: torch.device) -> tuple[list[float], float]:
    """Seconds of each of `steps` steps after one warm-up, and the peak memory (GiB, GPU only)."""
    step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return times, peak


class PlainLoop:
    """The transformers training loop a user writes first: bf16 model, AdamW, CE loss on the batch."""

    def __init__(self, model_dir: Path, batch: TrainingBatch, micro_batch: int, device: torch.device):
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16,
                                                          attn_implementation="sdpa").to(device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-6)
        ids = torch.tensor([p + c for p, c in zip(batch.prompt_ids, batch.completion_ids)], device=device)
        labels = ids.clone()
        labels[:, :PROMPT_TOKENS] = -100  # completion tokens only, as the RL loss
        self.micro = list(zip(ids.split(micro_batch), labels.split(micro_batch)))

    def step(self) -> None:
        for ids, labels in self.micro:
            (self.model(input_ids=ids, labels=labels).loss / len(self.micro)).backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def one_rank_process_group(device: torch.device) -> None:
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=0, world_size=1)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seqs", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=1024, help="tokens per sequence (a 64-token prompt + completion)")
    p.add_argument("--micro-batch-tokens", type=int, default=16384, help="ours: packed tokens per forward/backward")
    p.add_argument("--plain-micro-batch", type=int, default=4, help="plain loop: sequences per forward/backward")
    p.add_argument("--steps", type=int, default=5, help="measured steps per side, after one warm-up")
    p.add_argument("--tiny", action="store_true", help="a tiny shape, 8 x 128 tokens, 2 steps: checks the script on a CPU")
    args = p.parse_args()
    args.shape = "1.2b"
    if args.tiny:
        args.shape, args.seqs, args.seq_len, args.micro_batch_tokens, args.plain_micro_batch, args.steps = \
            "tiny", 8, 128, 512, 4, 2
    return args


def main() -> None:
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    attention = "flash_attention_2" if device.type == "cuda" and importlib.util.find_spec("flash_attn") else "sdpa"
    work = Path(tempfile.mkdtemp(prefix="gpu_learner_"))
    config = save_model(work / "model", SHAPES[args.shape], args.seq_len)
    batch = make_batch(args.seqs, args.seq_len, config.vocab_size)
    tokens = args.seqs * args.seq_len
    flops = model_flops_per_token(config, args.seq_len) * tokens
    peak = matmul_peak(device, 1024 if args.tiny else 8192)

    one_rank_process_group(device)
    ours = Learner(LearnerConfig(
        model_path=str(work / "model"), loss="agapo", beta=0.0, lr=1e-6, strategy="fsdp2", dtype="auto",
        device=str(device), gradient_checkpointing=True, layout="packed", attn_implementation=attention,
        micro_batch_tokens=args.micro_batch_tokens))
    ours_times, ours_peak = timed_steps(lambda: ours.step(batch), args.steps, device)
    del ours
    if device.type == "cuda":
        torch.cuda.empty_cache()
    plain = PlainLoop(work / "model", batch, args.plain_micro_batch, device)
    plain_times, plain_peak = timed_steps(plain.step, args.steps, device)

    def side(times: list[float], peak_memory: float, **settings) -> dict:
        step_s = statistics.median(times)
        return {"step_s": round(step_s, 4), "tokens_per_s": round(tokens / step_s, 1),
                "model_tflops": round(flops / step_s / 1e12, 3), "mfu": round(flops / step_s / peak, 4),
                "peak_memory_gib": round(peak_memory, 2), "steps_s": [round(t, 4) for t in times], **settings}

    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "shape": args.shape, "params": sum(p.numel() for p in plain.model.parameters()),
        "seqs": args.seqs, "seq_len": args.seq_len, "tokens_per_step": tokens,
        "matmul_peak_tflops": round(peak / 1e12, 2), "torch": torch.__version__,
        "dualmode_rl": side(ours_times, ours_peak, strategy="fsdp2 (1 rank)", precision="bf16 compute, fp32 masters",
                            layout="packed", attention=attention, gradient_checkpointing=True,
                            micro_batch_tokens=args.micro_batch_tokens),
        "plain": side(plain_times, plain_peak, precision="bf16 parameters and AdamW state", attention="sdpa",
                      gradient_checkpointing=False, micro_batch=args.plain_micro_batch),
    }
    result["ratio"] = round(result["dualmode_rl"]["tokens_per_s"] / result["plain"]["tokens_per_s"], 3)
    print(f"dualmode-rl {result['dualmode_rl']['tokens_per_s']:.0f} tokens/s (MFU {result['dualmode_rl']['mfu']:.1%}) | "
          f"plain transformers {result['plain']['tokens_per_s']:.0f} tokens/s (MFU {result['plain']['mfu']:.1%}) | "
          f"ratio {result['ratio']}", file=sys.stderr)
    print(json.dumps(result))
    import torch.distributed as dist

    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
