"""The learner: policy-gradient steps on a TrainingBatch, weight export, training state.

Data parallel: start N processes with a torch.distributed process group (gloo on CPU, nccl on
GPU) and give every learner the SAME full TrainingBatch; each takes its token-balanced shard,
normalises by batch-wide totals, and gradients are summed, so N learners make the same update
as one.
"""
from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from dualmode_rl.rl import data_parallel
from dualmode_rl.rl.batch import TrainingBatch
from dualmode_rl.rl.losses import LOSSES, LossInputs, LossNorm, LossSettings
from dualmode_rl.rl.micro_batches import LAYOUTS, MicroBatch, build_micro_batch, plan_micro_batches, shard_for_rank
from dualmode_rl.rl.off_policy import CORRECTIONS, LEVELS, sampler_gap_metrics
from dualmode_rl.rl.policy import LoraSettings, Policy, torch_dtype
from dualmode_rl.rl.token_logprobs import DEFAULT_CHUNK_TOKENS

STATE_FILE = "learner_state.pt"
SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")


@dataclass
class LearnerConfig:
    model_path: str
    ref_model_path: str | None = None  # frozen reference; default model_path (set it when resuming full fine-tuning)
    loss: str = "agapo"  # key of rl.losses.LOSSES
    lr: float = 1e-6
    beta: float = 1e-3  # KL weight; 0 skips the reference model entirely
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    total_steps: int | None = None  # needed by linear and cosine schedules
    micro_batch_tokens: int | None = 4096  # model positions (padding included) per forward/backward
    micro_batch_size: int | None = None  # or/and at most this many sequences per micro-batch
    gradient_checkpointing: bool = False
    layout: str = "padded"  # "padded", "packed" (padding-free) or "shared_prompt" (a group's prompt run once); see rl.micro_batches
    lora: LoraSettings | None = None
    seed: int = 0
    dtype: str = "float32"  # parameter dtype
    autocast_dtype: str | None = None  # e.g. "bfloat16" for mixed precision with fp32 parameters
    device: str = "cpu"
    steps_per_batch: int = 1  # optimizer steps per batch, each over the whole batch
    loss_agg: str = "token_sum"  # AGAPO only: token_sum | token_mean | seq_token_mean (see rl.losses)
    epsilon_low: float = 0.2
    epsilon_high: float | None = None
    max_completion_length: int | None = None  # Dr. GRPO normaliser; default: longest completion of the batch
    # Off-policy correction against the sampler's log-probs (TrainingBatch.rollout_logprobs), rl/off_policy.py:
    # "tis", "mis" or "none". AGAPO with steps_per_batch > 1 is off-policy after the first step, so it needs
    # an explicit choice (None is no choice). Without correction, the clipped losses' ratio is against the
    # learner's own first pass.
    off_policy_correction: str | None = None
    off_policy_cap: float = 2.0  # tis: weights min(ratio, cap); mis: ratios outside [1/cap, cap] dropped
    off_policy_level: str = "sequence"  # the ratio of the whole sequence (unbiased below the cap), or "token"
    fp32_lm_head: bool = True  # LM head and log-softmax in fp32 whatever the model's dtype (TRL's cast_lm_head_to_fp32)
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    attn_implementation: str = "sdpa"
    # Sampling temperature per mode. Log-probs (policy and reference) are those of softmax(logits / T),
    # the distribution the samples were drawn from, as TRL's GRPOTrainer and verl compute them: the
    # policy gradient then optimises the policy as sampled (and evaluated). Missing mode or T = 0: 1.
    # The engines' log-probs (processed_logprobs) are of the same distribution when top-p is 1 and top-k off.
    temperatures: dict[str, float] | None = None

    def __post_init__(self):
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
        if self.loss not in LOSSES:
            raise ValueError(f"LearnerConfig.loss: unknown '{self.loss}'; known: {sorted(LOSSES)}")
        if self.steps_per_batch < 1:
            raise ValueError(f"LearnerConfig.steps_per_batch must be >= 1, got {self.steps_per_batch}")
        if self.off_policy_correction not in (None, *CORRECTIONS):
            raise ValueError(f"LearnerConfig.off_policy_correction: '{self.off_policy_correction}' is not one of {CORRECTIONS}")
        if self.loss == "agapo" and self.steps_per_batch > 1 and self.off_policy_correction is None:
            raise ValueError("LearnerConfig: loss 'agapo' with steps_per_batch > 1 is off-policy after the first step; "
                             "set off_policy_correction to 'tis' or 'mis' or, knowingly, 'none'")
        if not self.off_policy_cap > 1.0:
            raise ValueError(f"LearnerConfig.off_policy_cap must be > 1, got {self.off_policy_cap}")
        if self.off_policy_level not in LEVELS:
            raise ValueError(f"LearnerConfig.off_policy_level: '{self.off_policy_level}' is not one of {LEVELS}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"LearnerConfig.lr_schedule: '{self.lr_schedule}' is not one of {SCHEDULES}")
        if self.lr_schedule in ("linear", "cosine") and not self.total_steps:
            raise ValueError(f"LearnerConfig.total_steps is required by lr_schedule '{self.lr_schedule}'")
        if self.lora is not None and self.ref_model_path not in (None, self.model_path):
            raise ValueError("LearnerConfig: with LoRA the reference is model_path with adapters disabled; "
                             "ref_model_path must be unset")
        if self.layout not in LAYOUTS:
            raise ValueError(f"LearnerConfig.layout: unknown '{self.layout}'; known: {LAYOUTS}")
        if self.micro_batch_tokens is None and self.micro_batch_size is None:
            raise ValueError("LearnerConfig: set micro_batch_tokens or micro_batch_size")
        torch_dtype(self.dtype)
        if self.autocast_dtype is not None:
            torch_dtype(self.autocast_dtype)

    def loss_settings(self) -> LossSettings:
        return LossSettings(beta=self.beta, epsilon_low=self.epsilon_low, epsilon_high=self.epsilon_high,
                            loss_agg=self.loss_agg, off_policy_correction=self.off_policy_correction or "none",
                            off_policy_cap=self.off_policy_cap, off_policy_level=self.off_policy_level)


def _validate(batch: TrainingBatch) -> None:
    n = len(batch.completion_ids)
    fields = {"prompt_ids": batch.prompt_ids, "advantages": batch.advantages, "group_ids": batch.group_ids,
              "modes": batch.modes}
    for name in ("rollout_logprobs", "ref_logprobs", "loss_mask"):
        if getattr(batch, name) is not None:
            fields[name] = getattr(batch, name)
    for name, values in fields.items():
        if len(values) != n:
            raise ValueError(f"TrainingBatch.{name} has {len(values)} rows, completion_ids has {n}")
    for i in range(n):
        if not batch.prompt_ids[i]:
            raise ValueError(f"TrainingBatch.prompt_ids[{i}] is empty; the first completion token needs a context")
        if not batch.completion_ids[i]:
            raise ValueError(f"TrainingBatch.completion_ids[{i}] is empty")
        if not math.isfinite(batch.advantages[i]):
            raise ValueError(f"TrainingBatch.advantages[{i}] = {batch.advantages[i]} is not finite")
        for name in ("rollout_logprobs", "ref_logprobs", "loss_mask"):
            values = getattr(batch, name)
            if values is not None and len(values[i]) != len(batch.completion_ids[i]):
                raise ValueError(f"TrainingBatch.{name}[{i}] has {len(values[i])} values "
                                 f"for {len(batch.completion_ids[i])} completion tokens")


class Learner:
    def __init__(self, config: LearnerConfig):
        self.config = config
        torch.manual_seed(config.seed)  # identical LoRA initialisation on every data-parallel rank
        self.policy = Policy(
            config.model_path, dtype=config.dtype, device=config.device, lora=config.lora,
            gradient_checkpointing=config.gradient_checkpointing, need_reference=config.beta != 0.0,
            attn_implementation=config.attn_implementation, chunk_tokens=config.chunk_tokens,
            fp32_lm_head=config.fp32_lm_head)
        if config.ref_model_path not in (None, config.model_path) and config.beta != 0.0:
            from transformers import AutoModelForCausalLM

            self.policy.ref_model = AutoModelForCausalLM.from_pretrained(
                config.ref_model_path, dtype=torch_dtype(config.dtype),
                attn_implementation=config.attn_implementation).to(config.device).eval().requires_grad_(False)
        self.params = self.policy.trainable_parameters()
        self._broadcast_parameters()
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, betas=config.adam_betas,
                                           eps=config.adam_eps, weight_decay=config.weight_decay)
        self.scheduler = self._make_scheduler()
        self.loss_fn = LOSSES[config.loss]
        self.settings = config.loss_settings()
        self.autocast_dtype = torch_dtype(config.autocast_dtype) if config.autocast_dtype else None
        self.global_step = 0

    def _make_scheduler(self):
        from transformers import get_scheduler

        name = self.config.lr_schedule
        if name == "constant" and self.config.warmup_steps:
            name = "constant_with_warmup"
        return get_scheduler(name, self.optimizer, num_warmup_steps=self.config.warmup_steps,
                             num_training_steps=self.config.total_steps)

    def _broadcast_parameters(self) -> None:
        world_size, _ = data_parallel.world()
        if world_size > 1:
            import torch.distributed as dist

            with torch.no_grad():
                for p in self.params:
                    dist.broadcast(p.data, src=0)

    # ---- one batch -----------------------------------------------------------------------

    def _micro_batches(self, batch: TrainingBatch) -> list[MicroBatch]:
        world_size, rank = data_parallel.world()
        lengths = [len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids)]
        micro = self._plan(batch.prompt_ids, batch.completion_ids, shard_for_rank(lengths, world_size, rank))
        if batch.loss_mask is not None:  # the loss, its ratios and the metrics all weigh tokens by mb.mask
            for mb in micro:
                mb.mask = mb.mask * mb.padded_values(batch.loss_mask)
        return micro

    def _plan(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], indices: list[int]) -> list[MicroBatch]:
        lengths = [len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)]
        groups = plan_micro_batches(lengths, indices, self.config.micro_batch_tokens, self.config.micro_batch_size,
                                    self.config.layout)
        return [build_micro_batch(prompt_ids, completion_ids, g, self.config.layout, device=self.config.device)
                for g in groups]

    def _norm(self, batch: TrainingBatch) -> LossNorm:
        """Batch-wide totals; a sequence whose loss_mask row is all 0 (rl.overlong "mask") is not counted."""
        lengths = [len(c) for c in batch.completion_ids]
        trained = batch.trained_tokens()
        return LossNorm(num_sequences=sum(t > 0 for t in trained), num_tokens=round(sum(trained)),
                        max_completion_length=self.config.max_completion_length or max(lengths))

    def step(self, batch: TrainingBatch) -> dict[str, float]:
        """`steps_per_batch` optimizer steps over the whole batch. Metrics (loss, kl, entropy,
        clip_frac, per-mode entropy/logprob/kl, the learner/sampler gap) come from the first pass;
        grad_norm is the mean over the optimizer steps."""
        started = time.perf_counter()
        _validate(batch)
        micro = self._micro_batches(batch)
        norm = self._norm(batch)
        advantages = torch.tensor(batch.advantages, dtype=torch.float32, device=self.config.device)
        refs = [None] * len(micro)
        temperatures = [self._token_temperatures(batch.modes, mb) for mb in micro]
        if self.settings.beta != 0.0:
            refs = [mb.padded_values(batch.ref_logprobs) if batch.ref_logprobs is not None else
                    self.policy.token_logprobs(mb, reference=True, autocast_dtype=self.autocast_dtype,
                                               temperature=t)[0]
                    for mb, t in zip(micro, temperatures)]
        samplers = [None if batch.rollout_logprobs is None else mb.padded_values(batch.rollout_logprobs) for mb in micro]
        correcting = self.settings.off_policy_correction != "none"
        if correcting and batch.rollout_logprobs is None:
            raise ValueError(f"off_policy_correction '{self.settings.off_policy_correction}' needs the sampler's "
                             "log-probs, but TrainingBatch.rollout_logprobs is None")
        # the behaviour policy: the sampler's when correcting, else the first pass when it goes stale
        olds = list(samplers) if correcting else [None] * len(micro)
        keep_first_pass = not correcting and self.config.steps_per_batch > 1
        first_pass: dict[str, float] = {}
        maxima: dict[str, float] = {}
        grad_norms = []
        for update in range(self.config.steps_per_batch):
            sums: dict[str, float] = defaultdict(float)
            for j, mb in enumerate(micro):
                logprobs, entropy = self.policy.token_logprobs(mb, autocast_dtype=self.autocast_dtype,
                                                               temperature=temperatures[j])
                if keep_first_pass and olds[j] is None:
                    olds[j] = logprobs.detach()
                inputs = LossInputs(logprobs=logprobs, mask=mb.mask, advantages=advantages[mb.sequence_indices],
                                    old_logprobs=olds[j], ref_logprobs=refs[j], entropy=entropy)
                loss, metrics = self.loss_fn(inputs, norm, self.settings)
                loss.backward()
                if update == 0:
                    sums["loss"] += loss.item()
                    for key, value in metrics.items():
                        sums[key] += value.item()
                    self._add_mode_metrics(sums, batch, mb, logprobs.detach(), entropy, refs[j])
                    if samplers[j] is not None:
                        self._add_sampler_gap(sums, maxima, batch, mb, logprobs.detach(), samplers[j])
            if update == 0:
                first_pass = dict(sums)
            grad_norms.append(self._optimizer_step())
        metrics = data_parallel.sum_values(first_pass, torch.device(self.config.device))
        metrics.update(data_parallel.max_values(maxima, torch.device(self.config.device)))
        metrics.update(grad_norm=sum(grad_norms) / len(grad_norms), lr=self.scheduler.get_last_lr()[0],
                       num_tokens=float(norm.num_tokens), num_sequences=float(norm.num_sequences),
                       step_time_s=time.perf_counter() - started)
        return metrics

    def _token_temperatures(self, modes: list[str], mb: MicroBatch) -> torch.Tensor | None:
        if not self.config.temperatures:
            return None
        return mb.token_values([self.config.temperatures.get(mode) or 1.0 for mode in modes])

    def reference_logprobs(self, prompt_ids: list[list[int]], completion_ids: list[list[int]],
                           modes: list[str]) -> list[list[float]] | None:
        """The frozen reference's log-prob of each completion token (of the sample's mode), for
        TrainingBatch.ref_logprobs.

        Safe to call on another thread while `step` runs (the reference is a separate module), so the
        loop computes them for the next batch while this one trains. None where a step needs none
        (beta == 0) or the reference is the policy's own module with adapters off (LoRA)."""
        if self.settings.beta == 0.0 or self.policy.ref_model is None:
            return None
        out: list[list[float]] = [[] for _ in completion_ids]
        for mb in self._plan(prompt_ids, completion_ids, list(range(len(completion_ids)))):
            ref = self.policy.token_logprobs(mb, reference=True, autocast_dtype=self.autocast_dtype,
                                             temperature=self._token_temperatures(modes, mb))[0]
            for row, i in enumerate(mb.sequence_indices):
                out[i] = ref[row, :len(completion_ids[i])].tolist()
        return out

    def _add_mode_metrics(self, sums, batch: TrainingBatch, mb: MicroBatch, logprobs, entropy, ref) -> None:
        modes = sorted(set(batch.modes))  # same keys on every rank, so metric sums line up
        tokens_per_mode = defaultdict(float)
        for mode, tokens in zip(batch.modes, batch.trained_tokens()):
            tokens_per_mode[mode] += tokens
        token_sums = mb.mask.sum(-1)
        for mode in modes:
            rows = torch.tensor([batch.modes[i] == mode for i in mb.sequence_indices], device=mb.mask.device)
            denominator = max(tokens_per_mode[mode], 1)
            selected = mb.mask * rows[:, None]
            sums[f"entropy/{mode}"] += ((entropy * selected).sum() / denominator).item()
            sums[f"logprob/{mode}"] += ((logprobs * selected).sum() / denominator).item()
            sums[f"response_tokens/{mode}"] += (token_sums * rows).sum().item()
            if ref is not None:
                sums[f"kl/{mode}"] += (((logprobs - ref) * selected).sum() / denominator).item()

    def _add_sampler_gap(self, sums, maxima, batch: TrainingBatch, mb: MicroBatch, logprobs, sampler) -> None:
        """The learner/sampler gap (rl.off_policy.sampler_gap_metrics), over the batch and per mode."""
        tokens: dict[str, float] = defaultdict(float)
        for mode, trained in zip(batch.modes, batch.trained_tokens()):
            tokens[mode] += trained
            tokens[""] += trained
        s = self.settings
        gap_sums, gap_maxima = sampler_gap_metrics(
            logprobs, sampler, mb.mask, [batch.modes[i] for i in mb.sequence_indices], dict(sorted(tokens.items())),
            s.off_policy_correction, s.off_policy_cap, s.off_policy_level)
        for key, value in gap_sums.items():
            sums[key] += value
        for key, value in gap_maxima.items():
            maxima[key] = max(maxima.get(key, 0.0), value)

    def _optimizer_step(self) -> float:
        data_parallel.sum_gradients(self.params)
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm).item()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        return grad_norm

    # ---- weights ----------------------------------------------------------------------------

    def export_weights(self, merged: bool = True) -> dict[str, torch.Tensor]:
        """Hugging Face names -> tensors; with LoRA merged into the base weights, or (merged=False)
        the adapter weights only, in PEFT's names."""
        return self.policy.export_weights(merged=merged)

    def save_pretrained(self, directory: str | Path) -> None:
        self.policy.save_pretrained(directory)

    # ---- training state --------------------------------------------------------------------

    def state_dict(self) -> dict:
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "global_step": self.global_step}
        if self.config.lora is not None:
            state["adapter"] = {k: v.clone() for k, v in self.export_weights(merged=False).items()}
        return state

    def load_state_dict(self, state: dict) -> None:
        if self.config.lora is not None:
            from peft import set_peft_model_state_dict

            if "adapter" not in state:
                raise ValueError("learner state: LoRA learner but the state has no 'adapter' weights")
            set_peft_model_state_dict(self.policy.model, state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.global_step = int(state["global_step"])

    def save_training_state(self, directory: str | Path) -> None:
        """Optimizer, scheduler, step, LoRA adapters (rank 0) and this rank's RNG states.
        Full fine-tuning weights are not in here: save them with save_pretrained and resume
        with model_path=<that folder>, ref_model_path=<the starting checkpoint>."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _, rank = data_parallel.world()
        if rank == 0:
            torch.save(self.state_dict(), directory / STATE_FILE)
        torch.save(_rng_state(), directory / f"rng_rank{rank}.pt")

    def load_training_state(self, directory: str | Path) -> None:
        directory = Path(directory)
        _, rank = data_parallel.world()
        state_file, rng_file = directory / STATE_FILE, directory / f"rng_rank{rank}.pt"
        for path in (state_file, rng_file):
            if not path.is_file():
                raise FileNotFoundError(f"learner training state: missing {path}")
        self.load_state_dict(torch.load(state_file, map_location=self.config.device, weights_only=False))
        _set_rng_state(torch.load(rng_file, weights_only=False))


def _rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy

        state["numpy"] = numpy.random.get_state()
    except ImportError:
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy

        numpy.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
