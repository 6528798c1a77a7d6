"""End-to-end RL throughput: dualmode-rl's loop against TRL's `GRPOTrainer`, side by side in one run.

One RL step = generation + reward + advantages + learner step (+ weight sync for dualmode-rl). Both sides:
the same model (a random-weight tiny Exaone4 with a trained BPE tokenizer), the same 16 prompts x 4
completions = 64 completions per step rendered through the same chat template in reasoning mode, at
most 64 new tokens sampled at T=0.6 / top-p 0.95, the same reward function (`digit_share`, a
TRL-convention function that dualmode-rl loads as a plug-in), the same loss (GRPO: group-normalised
advantages, token-level clipped ratio, k3 KL with `--beta`), one optimizer step per 64 completions
with the same micro-batch size, AdamW with a constant learning rate and clipping 1.0, fp32, CPU,
the same number of torch threads (TRL in the driver process, dualmode-rl in its learner actor).

- dualmode-rl: the components `dualmode-rl train` builds (orchestration/loop.py): a `RolloutPool` with one Ray
  actor holding a `VllmEngine`, a `RewardPool`, the `grpo` advantage, a `LearnerGroup` with one Ray actor
  holding the `Learner`, then the weight sync (`--weight-transfer`, default shm: vLLM's weight-transfer
  API with dualmode-rl's shared-memory CPU engine, the learner actor as trainer rank 0, as
  `rollout.weight_transfer: auto` picks with a CPU learner on one node; `gloo`: its socket engine; `file`: the learner actor writes a safetensors file the engine loads).
  By default with `rollout.max_staleness: 1` (the loop's asynchronous rollout): the next batch is
  generated while the learner steps, so dualmode-rl trains on samples one update old where TRL's are
  on-policy; `--max-staleness 0` compares the on-policy loop. The learner
  uses `learner.layout: shared_prompt` (a group's prompt is run once per micro-batch, same log-probs
  and gradients; `--layout padded` turns it off), and the frozen reference's log-probs of the next
  batch are computed with the generation, off the learner's path (in the learner actor, beside its step).
- TRL: `GRPOTrainer.train()` with `use_vllm=False`, i.e. transformers `generate`, which is what a user
  reaches for without a separate vLLM server. TRL's defaults of `gradient_checkpointing=True` and
  `bf16=True` are turned off to match (fp32, no recomputation).

The two alternate step by step (a dualmode-rl step runs inside TRL's `on_step_end` callback, outside
TRL's timed interval), so load from other processes on the machine hits both alike. The first step
of each is a warm-up and is not counted; medians of the rest are compared. Completion lengths are
not forced (dualmode-rl's engine does not expose vLLM's `ignore_eos`); mean generated tokens per step are
reported for both and the ratio is also given in completion tokens/s.

    .venv/bin/python benchmarks/e2e_vs_trl.py [--shape 30m|3m] [--steps 4] [--threads 1] [--vllm-bind nobind]
        [--max-staleness 0|1] [--layout shared_prompt|padded] [--weight-transfer gloo|file]
    .venv/bin/python benchmarks/e2e_vs_trl.py --quick      # tiny settings for the test

The last line printed is JSON: `ratio` = dualmode-rl samples/s / TRL samples/s, both step times, dualmode-rl's
stage times (with --max-staleness 1, `time/rollout`, `time/reward` and `time/reference` run on the
background thread, overlapping `time/learner`; `time/rollout_wait` is what the step waited for them), TRL's
generation time and the settings.

On a shared 2-core machine vLLM's automatic thread binding pins the engine to one core, which
other processes may be crowding; `--vllm-bind nobind` (PoolPlacement.cpu_binds) lets it move.
More than one torch thread on 2 shared cores makes both sides several times slower.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHAPES = {  # TinyModelShape keyword arguments
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
                 num_key_value_heads=1, sliding_window=16),
    "3m": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
               num_key_value_heads=2, sliding_window=64),
    "30m": dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=8,
                num_key_value_heads=4, sliding_window=64),
}
TEMPERATURE, TOP_P = 0.6, 0.95
MAX_MODEL_LEN = 256
WARMUP_STEPS = 1  # not counted: first calls pay one-off costs
MEMORY_SHARE = 0.1  # vLLM CPU: share of RAM for the KV cache; the machine is shared


def digit_share(completions, **kwargs) -> list[float]:
    """The shared reward, in TRL's convention: the share of digit characters in the completion.

    Cheap and varied on a random-weight model, so advantages are non-zero on both sides. TRL hands
    conversational completions as message lists, dualmode-rl hands plain strings."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def prompts(count: int) -> list[str]:
    rng = random.Random(0)
    return [f"Tom has {rng.randint(1, 99)} apples, buys {rng.randint(1, 99)} more and gives away "
            f"{rng.randint(1, 9)}. How many apples does Tom have now?" for _ in range(count)]


def tokenizer_corpus(lines: int = 2000) -> list[str]:
    rng = random.Random(1)
    out = []
    for i in range(lines):
        a, b, c = rng.randint(0, 999), rng.randint(0, 999), rng.randint(0, 9)
        out.append(f"Tom has {a} apples, buys {b} more and gives away {c}. How many apples does Tom have now?"
                   if i % 2 else f"<think>\n{a} + {b} = {a + b}, minus {c} is {a + b - c}\n</think>\n\n"
                                 f"The answer is \\boxed{{{a + b - c}}}.")
    return out


def build_model(out_dir: Path, shape: str) -> int:
    """A random-weight Exaone4 of `shape` plus a 400-token BPE tokenizer, saved in HF format (fp32)."""
    from dualmode_rl.orchestration.bootstrap.model import TinyModelShape, build_tiny_model
    from dualmode_rl.orchestration.bootstrap.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(tokenizer_corpus(), vocab_size=400)
    model = build_tiny_model(tokenizer, TinyModelShape(**SHAPES[shape]), seed=0)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return sum(p.numel() for p in model.parameters())


class UnirlSide:
    """The RL step of orchestration/loop.py, built from the same components (checkpoints off)."""

    def __init__(self, model_dir: Path, args, texts: list[str]):
        import ray

        from dualmode_rl.orchestration.components import build_weight_sync
        from dualmode_rl.orchestration.config import load_config
        from dualmode_rl.orchestration.rollout_ahead import RolloutAhead
        from dualmode_rl.rewards.pool import RewardPool
        from dualmode_rl.rewards.registry import load_reward
        from dualmode_rl.orchestration.learner_group import LearnerGroup, LearnerPlacement
        from dualmode_rl.rl.advantages import get_advantage
        from dualmode_rl.rl.learner import LearnerConfig
        from dualmode_rl.rollout.modes import ModeSampling, SamplingConfig
        from dualmode_rl.rollout.pool import PoolPlacement, RolloutPool

        self.rows = [{"id": str(i), "prompt": t, "mode": "reasoning"} for i, t in enumerate(texts)]
        self.samples = args.samples
        mode = ModeSampling(TEMPERATURE, TOP_P, args.tokens)
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        self.learner = LearnerGroup(LearnerConfig(
            model_path=str(model_dir), loss="grpo", lr=args.lr, beta=args.beta, max_grad_norm=1.0,
            micro_batch_size=args.micro_batch, micro_batch_tokens=None, layout=args.layout, seed=0,
            temperatures={"reasoning": TEMPERATURE}),  # as TRL, log-probs of softmax(logits / T)
            LearnerPlacement(num_workers=1, cpus_per_worker=1, torch_threads=args.threads),
            wait=False)  # as the loop: the engine starts while the learner loads
        self.pool = RolloutPool(1, dict(model_path=str(model_dir), sampling=SamplingConfig(mode, mode, seed=0),
                                        max_model_len=MAX_MODEL_LEN, seed=0, gpu_memory_utilization=MEMORY_SHARE,
                                        weight_transfer=args.weight_transfer),
                                placement=PoolPlacement(num_cpus_per_worker=1,
                                                        cpu_binds=[args.vllm_bind] if args.vllm_bind else None))
        self.learner.wait_started()
        self.rewards = RewardPool([(load_reward(f"{Path(__file__).resolve()}:digit_share"), 1.0)], num_workers=2)
        self.advantage = get_advantage("grpo")
        self.weight_sync = build_weight_sync(load_config(), self.pool, self.learner, args.weight_transfer)
        self.max_staleness = args.max_staleness
        self.ahead = RolloutAhead(self.pool, self.rewards, self.samples, reference=self.learner.reference_logprobs)
        self.version = 0
        self.staleness: list[float] = []
        self.times: list[float] = []
        self.stages: list[dict[str, float]] = []
        self.tokens: list[int] = []

    def step(self) -> None:
        """One step of orchestration/loop.py. With --max-staleness 1 the next batch is submitted before
        the learner update (RolloutAhead) and waited for, scored, before the step's clock stops, so no
        dualmode-rl work spills into TRL's timed interval."""
        from dualmode_rl.orchestration.step import learn

        start = time.perf_counter()
        self.version += 1
        scored = self.ahead.batch(self.version, lambda step: (self.rows, step), prefetch_next=self.max_staleness > 0)
        metrics = learn(scored, self.pool, self.learner, self.weight_sync, self.advantage, self.version)
        if self.max_staleness:
            self.ahead.wait(self.version + 1)
        self.times.append(time.perf_counter() - start)
        self.stages.append({k: v for k, v in metrics.items() if k.startswith("time/")})
        self.tokens.append(int(metrics["response_tokens"]))
        self.staleness.append(metrics["rollout/staleness"])

    def close(self) -> None:
        import ray

        self.weight_sync.close()
        self.pool.shutdown()
        self.learner.shutdown()
        self.ahead.close()
        self.rewards.close()
        ray.shutdown()


class TrlSide:
    """TRL's GRPOTrainer with transformers generation; step times come from `StepClock`."""

    def __init__(self, model_dir: Path, out_dir: Path, args, texts: list[str], total_steps: int):
        import torch
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        self.tokens: list[int] = []
        completions = args.prompts * args.samples
        config = GRPOConfig(
            output_dir=str(out_dir), max_steps=total_steps, loss_type="grpo", beta=args.beta,
            num_iterations=1, scale_rewards="group", num_generations=args.samples,
            per_device_train_batch_size=args.micro_batch,
            gradient_accumulation_steps=completions // args.micro_batch,  # one optimizer step per batch
            max_completion_length=args.tokens, temperature=TEMPERATURE, top_p=TOP_P, use_vllm=False,
            chat_template_kwargs={"enable_thinking": True},  # reasoning mode, as dualmode-rl's requests
            learning_rate=args.lr, lr_scheduler_type="constant", max_grad_norm=1.0,
            gradient_checkpointing=False, bf16=False, use_cpu=True, model_init_kwargs={"dtype": torch.float32},
            logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True, seed=0,
            dataloader_num_workers=0)
        dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": t}] for t in texts]})
        self.trainer = GRPOTrainer(model=str(model_dir), args=config, reward_funcs=self.digit_share_counted,
                                   train_dataset=dataset)
        self.generation_times: list[float] = []
        self.trainer._generate = self._timed(self.trainer._generate)  # for the breakdown only

    def _timed(self, generate):
        def timed_generate(*args, **kwargs):
            start = time.perf_counter()
            out = generate(*args, **kwargs)
            self.generation_times.append(time.perf_counter() - start)
            return out

        return timed_generate

    def digit_share_counted(self, completions, completion_ids=None, **kwargs):
        self.tokens.append(sum(len(c) for c in completion_ids))
        return digit_share(completions)

    def train(self, callback) -> None:
        self.trainer.add_callback(callback)
        self.trainer.train()


def step_clock(run_between):
    """A TRL callback: times each TRL step, and runs `run_between()` after it, outside the timing."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self.resumed = None

        def on_step_begin(self, args, state, control, **kwargs):
            if self.resumed is None:
                self.resumed = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.resumed)
            run_between()
            self.resumed = time.perf_counter()

    return StepClock()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="30m", choices=sorted(SHAPES), help="30m: the scale of the issue's TRL reference")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--samples", type=int, default=4, help="completions per prompt (G)")
    p.add_argument("--tokens", type=int, default=64, help="max new tokens")
    p.add_argument("--steps", type=int, default=4, help="measured steps per side, after one warm-up step")
    p.add_argument("--micro-batch", type=int, default=16, help="sequences per forward/backward, both sides")
    p.add_argument("--beta", type=float, default=0.001, help="KL weight, both sides (> 0 loads a reference model)")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of each learner (TRL in this process, ours in its actor) and TRL's generation; vLLM pins its own")
    p.add_argument("--vllm-bind", default=None,
                   help="VLLM_CPU_OMP_THREADS_BIND for the rollout actor, e.g. 0-1; default: vLLM's automatic binding")
    p.add_argument("--max-staleness", type=int, default=1, choices=(0, 1),
                   help="rollout.max_staleness: 1 generates step k+1 while step k trains (the loop's async option)")
    p.add_argument("--layout", default="shared_prompt", choices=("padded", "packed", "shared_prompt"),
                   help="learner.layout of dualmode-rl's learner: shared_prompt runs each group's prompt once")
    p.add_argument("--weight-transfer", default="shm", choices=("shm", "gloo", "file"),
                   help="rollout.weight_transfer: shm (what auto picks on one node) or gloo (vLLM's weight-transfer "
                        "API with dualmode-rl's CPU engines), or file")
    p.add_argument("--quick", action="store_true", help="tiny shape, 4 prompts x 2 x 16 tokens, 1 measured step")
    args = p.parse_args()
    if args.quick:
        args.shape, args.prompts, args.samples, args.tokens, args.steps, args.micro_batch = "tiny", 4, 2, 16, 1, 8
    if (args.prompts * args.samples) % args.micro_batch:
        p.error(f"--micro-batch {args.micro_batch} must divide prompts x samples = {args.prompts * args.samples}")
    return args


def summary(times: list[float], tokens: list[int], completions: int) -> dict:
    step_s = statistics.median(times)
    mean_tokens = statistics.mean(tokens)
    return {"step_s": round(step_s, 3), "samples_per_s": completions / step_s,
            "mean_completion_tokens": mean_tokens / completions, "completion_tokens_per_s": mean_tokens / step_s,
            "steps_s": [round(t, 3) for t in times]}


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    import torch

    torch.set_num_threads(args.threads)
    texts = prompts(args.prompts)
    work = Path(tempfile.mkdtemp(prefix="e2e_vs_trl_"))
    params = build_model(work / "model", args.shape)
    print(f"model: {params / 1e6:.2f}M parameters ({args.shape}); {args.prompts} prompts x {args.samples} "
          f"completions x <= {args.tokens} tokens; {args.threads} torch thread(s)", file=sys.stderr)

    started = time.perf_counter()
    ours = UnirlSide(work / "model", args, texts)
    ours_startup = time.perf_counter() - started
    started = time.perf_counter()
    trl = TrlSide(work / "model", work / "trl", args, texts, total_steps=WARMUP_STEPS + args.steps)
    trl_startup = time.perf_counter() - started
    torch.set_num_threads(args.threads)  # in case a library changed it while building

    clock = step_clock(ours.step)
    trl.train(clock)
    if len(clock.times) != WARMUP_STEPS + args.steps or len(ours.times) != WARMUP_STEPS + args.steps:
        raise RuntimeError(f"expected {WARMUP_STEPS + args.steps} steps per side, "
                           f"got TRL {len(clock.times)}, ours {len(ours.times)}")
    ours.close()
    shutil.rmtree(work, ignore_errors=True)

    result = report(args, params, ours, trl, clock.times, ours_startup, trl_startup)
    print(f"dualmode-rl {result['dualmode_rl_step_s']:.2f} s/step | TRL {result['trl_step_s']:.2f} s/step | "
          f"ratio {result['ratio']}", file=sys.stderr)
    print(json.dumps(result))


def settings(args, params: int) -> dict:
    return {"shape": args.shape, "params": params, "prompts": args.prompts, "samples": args.samples,
            "completions_per_step": args.prompts * args.samples, "max_new_tokens": args.tokens,
            "temperature": TEMPERATURE, "top_p": TOP_P, "loss": "grpo", "advantage": "grpo (group-normalised)",
            "beta": args.beta, "lr": args.lr, "micro_batch": args.micro_batch, "optimizer_steps_per_batch": 1,
            "max_staleness": args.max_staleness, "dualmode_rl_layout": args.layout, "measured_steps": args.steps,
            "warmup_steps": WARMUP_STEPS, "torch_threads": args.threads,
            "vllm_bind": args.vllm_bind or "auto", "dtype": "float32", "device": "cpu", "cpu_count": os.cpu_count(),
            "dualmode_rl_rollout": "RolloutPool, 1 Ray actor, vLLM", "weight_transfer": args.weight_transfer,
            "dualmode_rl_learner": "LearnerGroup, 1 Ray actor",
            "trl_generation": "transformers generate (use_vllm=False)",
            "reward": "digit_share (TRL convention; dualmode-rl loads it as a file plug-in)"}


def report(args, params: int, ours: UnirlSide, trl: TrlSide, trl_times: list[float],
           ours_startup: float, trl_startup: float) -> dict:
    completions = args.prompts * args.samples
    mine = summary(ours.times[WARMUP_STEPS:], ours.tokens[WARMUP_STEPS:], completions)
    theirs = summary(trl_times[WARMUP_STEPS:], trl.tokens[WARMUP_STEPS:], completions)
    stages = {k: round(statistics.median(s.get(k, 0.0) for s in ours.stages[WARMUP_STEPS:]), 3)
              for k in ours.stages[-1]}
    return {
        "ratio": round(mine["samples_per_s"] / theirs["samples_per_s"], 3),
        "token_ratio": round(mine["completion_tokens_per_s"] / theirs["completion_tokens_per_s"], 3),
        "dualmode_rl_step_s": mine["step_s"], "trl_step_s": theirs["step_s"],
        "dualmode-rl": {**mine, "stages_s": stages, "startup_s": round(ours_startup, 1),
                  "max_staleness_seen": max(ours.staleness[WARMUP_STEPS:])},
        "trl": {**theirs, "generation_s": round(statistics.median(trl.generation_times[WARMUP_STEPS:]), 3),
                "startup_s": round(trl_startup, 1)},
        "settings": settings(args, params),
    }


if __name__ == "__main__":
    main()
