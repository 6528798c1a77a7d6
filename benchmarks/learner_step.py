"""Learner step throughput: dualmode-rl's Learner against TRL's GRPOTrainer training step, same batch.

CPU (default): a ~3.3M-parameter Exaone4 (hidden 256, 4 layers, 3 local + 1 global), 64 sequences
(8 prompts x 8 samples) with up to 64 completion tokens, same loss settings, same micro-batch size
(sequences), same optimizer (AdamW, grad clipping 1.0). Generation is excluded on both sides: TRL
gets the precomputed batch straight into `training_step` (its `_prepare_inputs`, which would
generate, is bypassed) and its reference log-probs are computed with its own
`_get_per_token_logps_and_entropies` inside the timed region, as our step computes them too.
The two run alternately, several repetitions; medians are compared.

GPU (ours only): `--device cuda --shape 1.2b --seqs 64 --seq-len 1024 --dtype bf16 [--micro-batch 4]` reports
tokens/s, model TFLOP/s (6 * parameters * tokens; the reference forward is not counted) and peak
memory. The last line printed is JSON.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dualmode_rl.rl.batch import TrainingBatch  # noqa: E402
from dualmode_rl.rl.learner import Learner, LearnerConfig  # noqa: E402
from dualmode_rl.rl.trl_inputs import trl_grpo_inputs  # noqa: E402

GROUP_SIZE = 8
PAD_ID = 2


def model_config(shape: str):
    from transformers import Exaone4Config

    common = dict(bos_token_id=0, eos_token_id=1, pad_token_id=PAD_ID)
    if shape == "3m":
        return Exaone4Config(vocab_size=400, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                             max_position_embeddings=2048, sliding_window=64, sliding_window_pattern=4, **common)
    if shape == "1.2b":
        # EXAONE-4.0-1.2B: global attention in every layer (hybrid attention is the 32B's), tied embeddings
        return Exaone4Config(vocab_size=102400, hidden_size=2048, intermediate_size=4096, num_hidden_layers=30,
                             num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                             max_position_embeddings=65536, sliding_window=None,
                             layer_types=["full_attention"] * 30, tie_word_embeddings=True, **common)
    raise ValueError(f"--shape: unknown '{shape}' (3m, 1.2b)")


def save_model(directory: Path, shape: str, device: str) -> int:
    from transformers import Exaone4ForCausalLM, PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    config = model_config(shape)
    with torch.device(device):
        model = Exaone4ForCausalLM(config)
    if shape != "3m":
        model = model.to(torch.bfloat16)  # smaller file; loaded back in the requested dtype
    model.save_pretrained(directory)
    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2, **{f"t{i}": i for i in range(3, config.vocab_size)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<pad>").save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())  # tied weights counted once


def make_batch(num_seqs: int, completion_len: int, vocab: int, min_fraction: float, seed: int = 0) -> TrainingBatch:
    """num_seqs / 8 prompts of 16-48 tokens, 8 completions each, lengths uniform in
    [min_fraction * completion_len, completion_len] (1.0: every completion full length)."""
    rng = random.Random(seed)
    prompts, completions, advantages, groups, modes = [], [], [], [], []
    for g in range(max(num_seqs // GROUP_SIZE, 1)):
        prompt = [rng.randrange(3, vocab) for _ in range(rng.randint(16, 48))]
        for _ in range(min(GROUP_SIZE, num_seqs)):
            n = rng.randint(max(1, int(min_fraction * completion_len)), completion_len)
            prompts.append(prompt)
            completions.append([rng.randrange(3, vocab) for _ in range(n)])
            advantages.append(rng.uniform(-1, 1))
            groups.append(g)
            modes.append("reasoning" if g % 2 else "non_reasoning")
    return TrainingBatch(prompts, completions, advantages, groups, modes)


def batch_tokens(batch: TrainingBatch) -> int:
    return sum(len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids))


class TrlStep:
    """TRL GRPOTrainer's own training step on a precomputed batch (no generation)."""

    def __init__(self, model_dir: Path, out_dir: Path, args, batch: TrainingBatch):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from datasets import Dataset
            from trl import GRPOConfig, GRPOTrainer
        accumulation = args.seqs // args.micro_batch
        config = GRPOConfig(output_dir=str(out_dir), loss_type=args.loss, beta=args.beta, learning_rate=args.lr,
                            num_generations=GROUP_SIZE, per_device_train_batch_size=args.micro_batch,
                            gradient_accumulation_steps=accumulation, max_completion_length=args.seq_len,
                            max_grad_norm=1.0, report_to=[], use_cpu=args.device == "cpu", bf16=False,
                            epsilon_high=0.28 if args.loss == "dapo" else None)
        self.trainer = GRPOTrainer(model=str(model_dir), args=config,
                                   reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                                   train_dataset=Dataset.from_dict({"prompt": ["t3"] * GROUP_SIZE}))
        self.trainer._prepare_inputs = lambda inputs: inputs  # the batch is already generated and scored
        self.trainer.current_gradient_accumulation_steps = accumulation
        self.trainer.create_optimizer()
        full = trl_grpo_inputs(batch, PAD_ID)
        self.micro_batches = []
        for start in range(0, len(batch), args.micro_batch):
            part = slice(start, start + args.micro_batch)
            self.micro_batches.append({k: (v[part] if v.dim() else v) for k, v in full.items()})

    def step(self) -> None:
        trainer, model = self.trainer, self.trainer.model
        for inputs in self.micro_batches:
            if trainer.beta != 0.0:
                ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
                mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
                with torch.no_grad():
                    inputs["ref_per_token_logps"] = trainer._get_per_token_logps_and_entropies(
                        trainer.ref_model, ids, mask, inputs["completion_ids"].shape[1])[0]
            trainer.training_step(model, inputs, inputs["num_items_in_batch"])
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)


def learner_config(model_dir: Path, args) -> LearnerConfig:
    return LearnerConfig(
        model_path=str(model_dir), loss=args.loss, beta=args.beta, lr=args.lr, max_grad_norm=1.0,
        micro_batch_size=args.micro_batch if args.micro_batch_tokens is None else None,
        micro_batch_tokens=args.micro_batch_tokens, gradient_checkpointing=args.grad_ckpt, device=args.device,
        layout="padded", dtype="float32",  # fp32 master weights; bf16: compute under autocast
        autocast_dtype="bfloat16" if args.dtype == "bf16" else None)


def timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--shape", default="3m", choices=["3m", "1.2b"])
    p.add_argument("--seqs", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=64, help="maximum completion tokens")
    p.add_argument("--min-fraction", type=float, default=0.25,
                   help="completion lengths uniform in [min_fraction*seq_len, seq_len]; 1.0 = all full length")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--loss", default="grpo", choices=["grpo", "dapo", "dr_grpo", "agapo"])
    p.add_argument("--beta", type=float, default=None, help="default 0.04 on cpu (with TRL), 0 on cuda")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--micro-batch", type=int, default=8, help="sequences per micro-batch (both sides)")
    p.add_argument("--micro-batch-tokens", type=int, default=None, help="ours: pack by tokens instead")
    p.add_argument("--grad-ckpt", action="store_true")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--ours-only", action="store_true")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (1 default: on a shared 2-core machine more threads spin and stall)")
    args = p.parse_args()
    if args.beta is None:
        args.beta = 0.04 if args.device == "cpu" else 0.0
    if args.device == "cuda":
        args.ours_only = True
    if args.loss == "agapo":
        args.ours_only = True  # TRL has no AGAPO
    return args


def main():
    args = parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="learner_bench_"))
    n_params = save_model(work / "model", args.shape, args.device)
    vocab = model_config(args.shape).vocab_size
    batch = make_batch(args.seqs, args.seq_len, vocab, args.min_fraction)
    tokens = batch_tokens(batch)
    ours = Learner(learner_config(work / "model", args))
    trl = None if args.ours_only else TrlStep(work / "model", work / "trl", args, batch)

    ours_times, trl_times = [], []
    timed(lambda: ours.step(batch), args.device)  # warm-up
    if trl:
        timed(trl.step, args.device)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for rep in range(args.reps):
        ours_times.append(timed(lambda: ours.step(batch), args.device))
        if trl:
            trl_times.append(timed(trl.step, args.device))
        print(f"rep {rep}: ours {ours_times[-1]:.3f}s" + (f"  trl {trl_times[-1]:.3f}s" if trl else ""),
              file=sys.stderr)

    ours_s = statistics.median(ours_times)
    result = {"device": args.device, "shape": args.shape, "params": n_params, "loss": args.loss, "beta": args.beta,
              "seqs": args.seqs, "max_completion_tokens": args.seq_len, "tokens_per_step": tokens,
              "completion_tokens": sum(len(c) for c in batch.completion_ids), "reps": args.reps,
              "ours_step_s": ours_s, "ours_tokens_per_s": tokens / ours_s,
              "ours_model_tflops": 6 * n_params * tokens / ours_s / 1e12}
    if trl:
        trl_s = statistics.median(trl_times)
        result.update(trl_step_s=trl_s, trl_tokens_per_s=tokens / trl_s, ratio=trl_s / ours_s)
    if args.device == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    print(json.dumps(result))


if __name__ == "__main__":
    main()
