"""The learner: policy-gradient steps on a TrainingBatch, weight export, training state.

Data parallel: N processes in one torch.distributed process group (gloo on CPU, nccl on GPU; the
learner group in orchestration/learner_group.py starts them) each get the SAME full TrainingBatch,
take their token-balanced shard and normalise by batch-wide totals; gradients are summed, so N
learners make the same update as one. Strategy "ddp": every rank holds the whole model and the
gradients are all-reduced before the optimizer step. Strategy "fsdp2": parameters, gradients and
optimizer state are sharded with torch's `fully_shard` (each decoder layer, then the root).
"""
from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from dualmode_rl.plugins import is_plugin_spec
from dualmode_rl.rl import data_parallel
from dualmode_rl.rl.batch import TrainingBatch
from dualmode_rl.rl.losses import LOSSES, LossInputs, LossNorm, LossSettings, get_loss
from dualmode_rl.rl.micro_batches import LAYOUTS, MicroBatch, build_micro_batch, plan_micro_batches, shard_for_rank
from dualmode_rl.rl.off_policy import CORRECTIONS, LEVELS, sampler_gap_metrics
from dualmode_rl.rl.policy import LoraSettings, Policy, torch_dtype
from dualmode_rl.rl.token_logprobs import DEFAULT_CHUNK_TOKENS

STATE_FILE = "learner_state.pt"
DCP_DIR = "dcp"  # torch.distributed.checkpoint folder: master weights and optimizer state, every rank's shard
SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")
STRATEGIES = ("ddp", "fsdp2")


@dataclass
class LearnerConfig:
    model_path: str
    loss: str = "agapo"  # key of rl.losses.LOSSES, or a plug-in "file.py:fn" / "module:fn"
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
    # "shared_prompt" runs a group's prompt once per micro-batch (same gradients, a fifth less compute on
    # CPU, needs sdpa); "packed" (padding-free, flash-attention varlen on GPUs) is the long-sequence path;
    # "padded" the plain one. See rl.micro_batches.
    layout: str = "shared_prompt"
    lora: LoraSettings | None = None
    seed: int = 0
    dtype: str = "auto"  # the checkpoint's weight dtype ("auto": read from it); updated weights are fp32 masters
    autocast_dtype: str | None = None  # compute dtype; None: `dtype` (so bf16 checkpoints compute in bf16)
    device: str = "auto"  # "auto": the GPU when one is visible, else the CPU
    strategy: str = "ddp"  # "ddp" (replicated, gradients all-reduced) or "fsdp2" (sharded, torch fully_shard)
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
        if self.loss not in LOSSES and not is_plugin_spec(self.loss):
            raise ValueError(f"LearnerConfig.loss: unknown '{self.loss}'; known: {sorted(LOSSES)}, or 'file.py:fn'")
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
        if self.layout not in LAYOUTS:
            raise ValueError(f"LearnerConfig.layout: unknown '{self.layout}'; known: {LAYOUTS}")
        if self.layout == "shared_prompt" and self.attn_implementation != "sdpa":
            raise ValueError(f"LearnerConfig.layout 'shared_prompt' needs attn_implementation 'sdpa' (its tree masks), "
                             f"got '{self.attn_implementation}'; use layout 'packed' with flash attention")
        if self.micro_batch_tokens is None and self.micro_batch_size is None:
            raise ValueError("LearnerConfig: set micro_batch_tokens or micro_batch_size")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"LearnerConfig.strategy: '{self.strategy}' is not one of {STRATEGIES}")
        if self.device != "auto":
            torch.device(self.device)
        if self.dtype != "auto":
            torch_dtype(self.dtype)
        if self.autocast_dtype is not None:
            torch_dtype(self.autocast_dtype)

    def loss_settings(self) -> LossSettings:
        return LossSettings(beta=self.beta, epsilon_low=self.epsilon_low, epsilon_high=self.epsilon_high,
                            loss_agg=self.loss_agg, off_policy_correction=self.off_policy_correction or "none",
                            off_policy_cap=self.off_policy_cap, off_policy_level=self.off_policy_level)


def resolve_device(name: str) -> torch.device:
    """"auto": the first visible GPU (a Ray actor sees only the GPUs of its bundle), else the CPU."""
    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


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
        self.device = resolve_device(config.device)
        self.sharded = config.strategy == "fsdp2"
        if self.sharded and not data_parallel.initialized():
            raise ValueError("LearnerConfig.strategy 'fsdp2' needs an initialised torch.distributed process group "
                             "(orchestration.learner_group starts one; one rank is fine)")
        torch.manual_seed(config.seed)  # identical LoRA initialisation on every data-parallel rank
        self.policy = Policy(
            config.model_path, dtype=config.dtype, device=self.device, lora=config.lora,
            gradient_checkpointing=config.gradient_checkpointing, need_reference=config.beta != 0.0,
            attn_implementation=config.attn_implementation, chunk_tokens=config.chunk_tokens,
            fp32_lm_head=config.fp32_lm_head)
        compute = torch_dtype(config.autocast_dtype or self.policy.dtype)
        self.autocast_dtype = compute if compute.itemsize < 4 else None  # autocast: 16-bit compute only
        if self.sharded:
            self.policy.shard(self.autocast_dtype)
        self.params = self.policy.trainable_parameters()
        if not self.sharded:
            self._broadcast_parameters()
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, betas=config.adam_betas,
                                           eps=config.adam_eps, weight_decay=config.weight_decay)
        self.scheduler = self._make_scheduler()
        self.loss_fn = get_loss(config.loss)
        self.settings = config.loss_settings()
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

    def _micro_batches(self, batch: TrainingBatch) -> tuple[list[MicroBatch], int]:
        """This rank's micro-batches and how many of them are real. Under FSDP2 every rank must run as many
        forward/backward passes (each one gathers and reduce-scatters), so the short ranks get
        passes over the batch's first sequence that contribute nothing."""
        world_size, rank = data_parallel.world()
        lengths = [len(p) + len(c) for p, c in zip(batch.prompt_ids, batch.completion_ids)]
        micro = self._plan(batch.prompt_ids, batch.completion_ids, shard_for_rank(lengths, world_size, rank))
        if batch.loss_mask is not None:  # the loss, its ratios and the metrics all weigh tokens by mb.mask
            for mb in micro:
                mb.mask = mb.mask * mb.padded_values(batch.loss_mask)
        real = len(micro)
        if self.sharded:
            padding = data_parallel.max_value(real, self.device) - real
            micro += self._plan(batch.prompt_ids, batch.completion_ids, [0])[:1] * padding
        return micro, real

    def _plan(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], indices: list[int]) -> list[MicroBatch]:
        lengths = [len(p) + len(c) for p, c in zip(prompt_ids, completion_ids)]
        groups = plan_micro_batches(lengths, indices, self.config.micro_batch_tokens, self.config.micro_batch_size,
                                    self.config.layout)
        return [build_micro_batch(prompt_ids, completion_ids, g, self.config.layout, device=self.device)
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
        micro, real = self._micro_batches(batch)
        norm = self._norm(batch)
        advantages = torch.tensor(batch.advantages, dtype=torch.float32, device=self.device)
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
                if j >= real:  # FSDP2 padding pass: same collectives, no contribution
                    (logprobs.sum() * 0.0).backward()
                    continue
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
        metrics = data_parallel.sum_values(first_pass, self.device)
        metrics.update(data_parallel.max_values(maxima, self.device))
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

        Safe to call on another thread while `step` runs (the reference is a separate module that issues
        no collectives), so the loop computes them for the next batch while this one trains. None where
        a step needs none (beta == 0), where the reference is the policy's own module with adapters off
        (LoRA), or where it is sharded (fsdp2: its forward gathers, and collectives on a second thread
        would interleave with the step's): the step then computes them itself."""
        if self.settings.beta == 0.0 or self.policy.ref_module is None or self.sharded:
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
        if not self.sharded:
            data_parallel.sum_gradients(self.params)
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        return grad_norm.item()

    # ---- weights ----------------------------------------------------------------------------

    def iter_weights(self, merged: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
        """Hugging Face names -> full tensors in the checkpoint dtype, LoRA merged (or, merged=False, the
        adapter weights only). Under fsdp2 a collective: every rank iterates in lockstep, each tensor
        gathered as it is reached; only one rank needs to keep them."""
        return self.policy.iter_weights(merged=merged)

    def iter_update(self) -> Iterator[tuple[str, torch.Tensor]]:
        """What a weight update sends the rollout engines (Policy.iter_update); a collective under fsdp2."""
        return self.policy.iter_update()

    def update_metadata(self) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        return self.policy.update_metadata()

    def export_weights(self, merged: bool = True) -> dict[str, torch.Tensor]:
        return dict(self.iter_weights(merged=merged))

    def save_pretrained(self, directory: str | Path) -> None:
        """The policy as a Hugging Face folder (rank 0 writes; every rank must call)."""
        self.policy.save_pretrained(directory)

    # ---- training state --------------------------------------------------------------------

    def save(self, checkpoint_dir: str | Path) -> None:
        """`policy/` (Hugging Face folder) and `trainer/` (training state) of a checkpoint; every rank calls."""
        self.save_pretrained(Path(checkpoint_dir) / "policy")
        self.save_training_state(Path(checkpoint_dir) / "trainer")

    def load(self, checkpoint_dir: str | Path) -> None:
        self.load_training_state(Path(checkpoint_dir) / "trainer")

    def _distributed_state(self) -> dict:
        """The trainable weights (fp32 masters; LoRA: the adapters) and the optimizer state, as torch's
        distributed-checkpoint state dicts (keyed by parameter name, sharded under fsdp2): a checkpoint
        saved by either strategy, with any number of ranks, loads into the other."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

        module = self.policy.module
        return {"model": get_model_state_dict(module, options=StateDictOptions(ignore_frozen_params=True)),
                "optimizer": get_optimizer_state_dict(module, self.optimizer)}

    def save_training_state(self, directory: str | Path) -> None:
        """Master weights and optimizer state (torch.distributed.checkpoint, each rank writes its part),
        scheduler and step (rank 0), this rank's RNG states. Every rank calls."""
        import torch.distributed.checkpoint as dcp

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _, rank = data_parallel.world()
        dcp.save(self._distributed_state(), checkpoint_id=str(directory / DCP_DIR), no_dist=not data_parallel.initialized())
        if rank == 0:
            torch.save({"scheduler": self.scheduler.state_dict(), "global_step": self.global_step},
                       directory / STATE_FILE)
        torch.save(_rng_state(), directory / f"rng_rank{rank}.pt")

    def load_training_state(self, directory: str | Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

        directory = Path(directory)
        _, rank = data_parallel.world()
        state_file, rng_file = directory / STATE_FILE, directory / f"rng_rank{rank}.pt"
        for path in (state_file, rng_file, directory / DCP_DIR / ".metadata"):
            if not path.is_file():
                raise FileNotFoundError(f"learner training state: missing {path}")
        state = self._distributed_state()  # the shapes to load into (initialises the optimizer state)
        dcp.load(state, checkpoint_id=str(directory / DCP_DIR), no_dist=not data_parallel.initialized())
        # strict=False: the state holds the trainable weights only (LoRA: the adapters)
        set_model_state_dict(self.policy.module, state["model"], options=StateDictOptions(strict=False))
        set_optimizer_state_dict(self.policy.module, self.optimizer, state["optimizer"])
        extra = torch.load(state_file, weights_only=False)
        self.scheduler.load_state_dict(extra["scheduler"])
        self.global_step = int(extra["global_step"])
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
