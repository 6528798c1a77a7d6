"""One YAML file validated into typed objects, with `key.sub=value` overrides from the command line."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from dualmode_rl.atomic import write_text_atomic
from dualmode_rl.constants import MODES, NON_REASONING, REASONING, RECOMMENDED_TEMPERATURE
from dualmode_rl.plugins import is_plugin_spec
from dualmode_rl.rl.learner import LearnerConfig
from dualmode_rl.rl.policy import LoraSettings
from dualmode_rl.rollout.placement import check_colocation, plan_engine
from dualmode_rl.rollout.registry import check_engine_name


_LEARNER = {f.name: f.default for f in dataclasses.fields(LearnerConfig)}  # the one set of learner defaults
_LORA = LoraSettings()
VLLM_CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
CPU_MAX_MODEL_LEN = 32768


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelShape(Section):
    hidden_size: int = Field(256, gt=0)
    intermediate_size: int = Field(512, gt=0)
    num_hidden_layers: int = Field(4, gt=0)
    num_attention_heads: int = Field(4, gt=0)
    num_key_value_heads: int = Field(2, gt=0)
    sliding_window: int = Field(64, gt=0)

    @model_validator(mode="after")
    def _head_dim_supported(self):
        head_dim, rest = divmod(self.hidden_size, self.num_attention_heads)
        if rest or head_dim not in VLLM_CPU_HEAD_DIMS:
            raise ValueError(
                f"hidden_size / num_attention_heads = {self.hidden_size / self.num_attention_heads} must be one of "
                f"{VLLM_CPU_HEAD_DIMS} (head sizes vLLM's CPU attention supports)"
            )
        return self


class BootstrapConfig(Section):
    out: str = "runs/bootstrap"
    seed: int = 0
    train_size: int = Field(20000, gt=0)
    validation_size: int = Field(200, gt=0)
    test_size: int = Field(400, gt=0)
    # The task mix and number range make the bootstrap's worked steps reliable for any seed: at 0.3 code
    # and numbers to 12, seed 2's worked answers were no better than its unworked ones and RL gained
    # nothing; at 0.15 and 9 they were right 0.91 against 0.69 (docs/demo.md).
    code_share: float = Field(0.15, ge=0, le=1)
    max_operand: int = Field(9, ge=2)  # a math problem's largest start value and largest added number
    vocab_size: int = Field(768, ge=300)
    # "whole": each number of the task suite is one token; "digits": one token per digit (orchestration/bootstrap/tokenizer.py).
    number_tokens: Literal["whole", "digits"] = "whole"
    shape: ModelShape = ModelShape()
    reasoning_token_ratio: float = Field(1.5, gt=0)  # reasoning : non-reasoning SFT tokens (the report's 1.5:1)
    # Share of the math SFT rows whose reasoning-mode think block skips the work ("I can answer this
    # directly."), as short traces in distilled SFT data do. The bootstrapped model then answers about
    # half the math problems unworked in reasoning mode, and worse; RL with verifiable rewards learns to
    # work them out (docs/demo.md). The answers are always right; rows record `worked`.
    unworked_share: float = Field(0.5, ge=0, le=1)
    sft_steps: int = Field(1200, gt=0)
    sft_batch_size: int = Field(32, gt=0)
    sft_learning_rate: float = Field(2e-3, gt=0)
    sft_time_limit_s: float = Field(1800, gt=0)  # safety cap only; the step count is what makes runs reproducible
    # 0 = all cores: the SFT runs before any vLLM or Ray process exists (2 threads: 1.9x faster than 1 on
    # the 2-core box). Set 1 where other processes share the cores: contending OpenMP threads ran 4-5x slower.
    torch_threads: int = Field(0, ge=0)


class EvalSampling(Section):
    temperature: float = Field(ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(-1, ge=-1)  # -1: off

    @field_validator("top_k")
    @classmethod
    def _top_k_on_or_off(cls, value: int) -> int:
        if value == 0:
            raise ValueError("top_k must be -1 (off) or >= 1")
        return value


class SamplingSection(EvalSampling):
    # Training samples the full softmax(logits / T): top-p 1 and top-k off, so the learner's log-probs
    # are of the sampler's distribution. A cut tail is only ever pushed down; training warns.
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(160, gt=0)


class ReasoningSamplingSection(SamplingSection):
    # Think tokens (counted from `<think>`, the generation prompt's newline included) after which the
    # engine forces `</think>`; the forced token gets no loss weight (rollout/thinking_budget.py). None: no budget.
    thinking_budget: int | None = Field(None, ge=0)


VLLM_ONLY = ("enforce_eager", "gpu_memory_utilization", "tensor_parallel_size", "in_process")  # what only the vLLM engine takes


class RolloutConfig(Section):
    engine: str = "vllm"  # a name in rollout/registry.py: "vllm" or "hf" (transformers)
    num_workers: int = Field(1, gt=0)  # rollout engines, one Ray actor each
    samples_per_prompt: int = Field(8, gt=0)  # G
    # Training samples the policy itself (T=1), as TRL and verl do by default. Any T > 0 stays on-policy:
    # the learner's log-probs are taken at these temperatures (loop.learner_config). Evaluation keeps
    # the model's recommended settings (eval.*).
    reasoning: ReasoningSamplingSection = ReasoningSamplingSection(temperature=1.0)
    non_reasoning: SamplingSection = SamplingSection(temperature=1.0)
    # vLLM engine settings (rollout/vllm_engine.py, vllm_engine_args). None / "auto" resolve where the engine
    # runs: on CPU fp32, eager, 10% of RAM; on GPUs the model's dtype, CUDA graphs, 85% of each GPU (45%
    # colocated).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    enforce_eager: bool | None = None
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    # Prompt + completion tokens per sequence. None: the model's max_position_embeddings (its config.json),
    # at most CPU_MAX_MODEL_LEN when rollout workers have no GPU, so vLLM's CPU KV cache (a share of the
    # memory, rollout.gpu_memory_utilization) holds a full sequence. Start-up checks every prompt fits.
    max_model_len: int | None = Field(None, gt=0)
    tensor_parallel_size: int = Field(1, gt=0)
    # vLLM's engine core in the engine's own process rather than a process of its own. None: on CPU
    # (an engine starts ~15 s sooner and generates ~35% faster on 2 cores), not on GPUs.
    in_process: bool | None = None
    # Sample.logprobs: "processed_logprobs" = of the distribution sampled from (the behaviour policy of the
    # off-policy correction and the mismatch metrics); "raw_logprobs" = the untempered model's, for analysis.
    logprobs_mode: Literal["raw_logprobs", "processed_logprobs"] = "processed_logprobs"
    # GPUs per engine: None = tensor_parallel_size when the Ray cluster has GPUs, else 0. With
    # tensor_parallel_size > 1 it must be that many whole GPUs (one 1-GPU bundle per rank).
    gpus_per_worker: float | None = Field(None, ge=0)
    cpus_per_worker: float = Field(1, gt=0)  # CPUs each engine's rollout actor reserves in its bundle
    # CPU machines: VLLM_CPU_OMP_THREADS_BIND per worker, e.g. ["0", "1"] or ["nobind"]; None = vLLM's auto.
    cpu_binds: list[str] | None = None
    # 0: on-policy, each step generates then trains. 1: step k+1 is generated while step k trains, so its
    # samples are one update old (orchestration/rollout_ahead.py). The pipeline drains at checkpoints.
    max_staleness: int = Field(0, ge=0, le=1)
    # "separate": rollout engines on devices of their own. "colocated": on the learner's GPUs, asleep
    # (vLLM sleep mode) during the learner step; needs max_staleness 0.
    placement: Literal["separate", "colocated"] = "separate"
    # How new weights reach the engines (rollout/weight_transfer/): "auto" = vLLM's nccl (learner on a
    # GPU, separate), ipc (colocated), else dualmode-rl's shm engine on a one-node cluster and its gloo
    # engine across nodes (the "hf" engine: "file"); "file" = a safetensors file every engine loads.
    weight_transfer: Literal["auto", "file", "gloo", "shm", "nccl", "ipc"] = "auto"
    weight_transfer_bucket_mb: float = Field(256, gt=0)  # streamed in buckets of this size
    weight_transfer_timeout_s: float = Field(1800, gt=0)  # longest wait in a rendezvous or broadcast
    # "file": where learner rank 0 writes the weight file; null: /dev/shm when writable with room, else
    # the temp dir. With learner and rollout actors on different machines, a folder every machine mounts.
    weight_file_dir: str | None = None

    _known_engine = field_validator("engine")(check_engine_name)

    @model_validator(mode="after")
    def _engine_settings_agree(self):
        if self.gpus_per_worker is not None:
            plan_engine(self.tensor_parallel_size, self.gpus_per_worker, 1)  # raises naming the key
        if self.placement == "colocated" and self.max_staleness:
            raise ValueError("rollout.placement 'colocated' needs rollout.max_staleness 0: the engines sleep "
                             "while the learner steps, so they cannot generate the next batch meanwhile")
        if self.engine == "hf" and self.weight_transfer not in ("auto", "file"):
            raise ValueError(f"rollout.weight_transfer '{self.weight_transfer}' needs rollout.engine 'vllm' "
                             "(vLLM's weight-transfer API); the 'hf' engine loads a file")
        if self.engine == "hf" and self.placement == "colocated":
            raise ValueError("rollout.placement 'colocated' needs rollout.engine 'vllm' (vLLM's sleep mode)")
        set_for_vllm = [k for k in VLLM_ONLY if getattr(self, k) != RolloutConfig.model_fields[k].default]
        if self.engine != "vllm" and set_for_vllm:
            raise ValueError(f"rollout.{set_for_vllm[0]} is a vLLM setting; rollout.engine '{self.engine}' takes none")
        if self.weight_transfer == "nccl" and self.placement == "colocated":
            raise ValueError("rollout.weight_transfer 'nccl' needs rollout.placement 'separate' (NCCL cannot join "
                             "two processes on one GPU); colocated engines take 'ipc'")
        if self.weight_transfer == "ipc" and self.placement != "colocated":
            raise ValueError("rollout.weight_transfer 'ipc' (CUDA IPC) needs rollout.placement 'colocated'")
        return self


class RewardSpec(Section):
    name: str  # built-in ("auto", "math", "code", "format", "arithmetic_steps", "mode_fidelity") or plug-in path
    weight: float = 1.0
    # Plug-ins only (rewards/plugins.py). `args`: the named object is a factory, called with these keyword
    # arguments to make the reward (trl.rewards:get_soft_overlong_punishment). `columns`: {the reward's
    # parameter: the row's column} (TRL's accuracy_reward reads `solution`: {solution: answer}).
    # `completion_format` (TRL-style rewards): `messages` hands completions and prompts as chat messages,
    # as TRL does for conversational data; `text` as strings. `range`: the [low, high] its values lie in,
    # used as they are (TRL's overlong punishment: [-1, 0]); any other value is an error (rewards/types.py).
    args: dict[str, Any] | None = None
    columns: dict[str, str] = {}
    completion_format: Literal["text", "messages"] = "text"
    range: tuple[float, float] = (0.0, 1.0)

    @model_validator(mode="after")
    def _range_ordered(self):
        if not self.range[0] < self.range[1]:
            raise ValueError(f"range must be [low, high] with low < high, got {list(self.range)}")
        return self


class RewardsConfig(Section):
    rewards: list[RewardSpec] = [RewardSpec(name="auto")]
    num_workers: int = Field(2, gt=0)  # reward calls at a time
    # Each reward is called with chunks of up to batch_size samples (one at a time for verl-style ones);
    # 1 calls every reward once per sample (benchmarks/reward_pool.py compares the two).
    batch_size: int = Field(64, gt=0)
    # The time limit of one call: a chunk, or one sample of a chunk that failed or ran out of time,
    # retried alone. The built-in verifiers also limit each sample themselves (math 5 s, code 10 s).
    timeout_s: float = Field(30.0, gt=0)
    max_failed_steps: int = Field(3, gt=0)  # a run stops when a reward fails on every sample this many steps in a row


class PerMode(Section):
    """One setting per mode: `{reasoning: ..., non_reasoning: ...}`, or a single value for both."""

    @model_validator(mode="before")
    @classmethod
    def _one_value_for_both(cls, value):
        return value if isinstance(value, (dict, BaseModel)) else {mode: value for mode in cls.model_fields}


class OverlongConfig(PerMode):
    reasoning: Literal["none", "mask", "soft_penalty"] = "none"
    non_reasoning: Literal["none", "mask", "soft_penalty"] = "none"


class OverlongBufferConfig(PerMode):
    reasoning: int | None = Field(None, gt=0)  # None: a fifth of rollout.reasoning.max_tokens (DAPO's 4096 of 20480)
    non_reasoning: int | None = Field(None, gt=0)


class AlgorithmConfig(Section):
    advantage: str = "agapo"  # a key of rl.advantages.ADVANTAGES, or a plug-in "file.py:fn" / "module:fn"
    # Keyword parameters of the advantage estimator, e.g. {all_incorrect_advantage: -0.2} for agapo_neg.
    advantage_params: dict[str, float | int | bool] = {}
    loss: str = "agapo"  # a key of rl.losses.LOSSES, or a plug-in "file.py:fn" / "module:fn"
    beta: float = Field(_LEARNER["beta"], ge=0)  # weight of the sequence-level KL to the SFT reference
    loss_aggregation: Literal["token_sum", "token_mean", "seq_token_mean"] = _LEARNER["loss_agg"]  # AGAPO as printed: token_sum
    epsilon_low: float = Field(_LEARNER["epsilon_low"], ge=0)  # GRPO/DAPO/Dr. GRPO ratio clip
    epsilon_high: float | None = Field(_LEARNER["epsilon_high"], ge=0)  # None: epsilon_low (DAPO: 0.28)
    max_completion_length: int | None = Field(_LEARNER["max_completion_length"], gt=0)  # Dr. GRPO; None: the batch's longest
    # AGAPO's global stage over the whole batch (as printed) or within each mode, so long reasoning rollouts do
    # not set the scale of non-reasoning ones (rl/advantages.py). GRPO, Dr. GRPO and RLOO have none: ignored.
    normalize: Literal["batch", "mode"] = "batch"
    # DAPO's dynamic sampling: drop the groups whose rewards are all equal and refill the batch from further
    # prompts, in at most max_refill_rounds rounds (orchestration/dynamic_sampling.py).
    dynamic_sampling: bool = False
    max_refill_rounds: int = Field(3, ge=0)
    # DAPO's overlong handling per mode (rl/overlong.py): none, mask (truncated samples leave the loss) or
    # soft_penalty (a linear penalty in the last overlong_buffer tokens before rollout.<mode>.max_tokens).
    overlong: OverlongConfig = OverlongConfig()
    overlong_buffer: OverlongBufferConfig = OverlongBufferConfig()

    @field_validator("loss", "advantage")
    @classmethod
    def _registered(cls, name: str, info: ValidationInfo) -> str:
        from dualmode_rl.rl.advantages import ADVANTAGES
        from dualmode_rl.rl.losses import LOSSES

        registry = {"loss": LOSSES, "advantage": ADVANTAGES}[info.field_name]
        if name not in registry and not is_plugin_spec(name):  # a plug-in is loaded and checked by preflight
            raise ValueError(f"unknown {info.field_name} '{name}'; known: {sorted(registry)}, "
                             "or a plug-in 'file.py:fn' / 'module:fn'")
        return name

    @model_validator(mode="after")
    def _advantage_params_apply(self):
        import inspect

        import torch

        from dualmode_rl.rl.advantages import ADVANTAGES, get_advantage

        if self.advantage not in ADVANTAGES:  # a plug-in: its parameters are checked when preflight loads it
            return self
        accepted = list(inspect.signature(ADVANTAGES[self.advantage]).parameters)[1:]  # after `rewards`
        for key in self.advantage_params:
            if key not in accepted:
                raise ValueError(f"advantage_params.{key}: not a parameter of advantage '{self.advantage}' "
                                 f"(it takes {accepted})")
        try:  # the estimator's own checks of its parameters, on a one-prompt batch
            get_advantage(self.advantage, **self.advantage_params)(torch.tensor([[0.0, 1.0]]))
        except ValueError as err:
            raise ValueError(f"advantage_params: {err}") from None
        return self


class LoraSection(Section):
    r: int = Field(_LORA.r, gt=0)
    alpha: int = Field(_LORA.alpha, gt=0)
    dropout: float = Field(_LORA.dropout, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(_LORA.target_modules), min_length=1)


class LearnerSection(Section):
    """The learner group and every LearnerConfig setting (rl/learner.py, which holds the defaults and
    documents each). Keys are LearnerConfig's field names."""

    # Placement: num_workers ranks (Ray actors in one placement group, one torch.distributed group).
    num_workers: int = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0, le=1)  # GPU clusters: 1 (one rank per GPU)
    cpus_per_worker: float = Field(1, gt=0)
    # torch threads per rank (0: torch's default). On small CPU machines a vLLM actor holds a core.
    torch_threads: int = Field(1, ge=0)
    strategy: Literal["ddp", "fsdp2"] = _LEARNER["strategy"]
    device: str = _LEARNER["device"]  # auto | cpu | cuda
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _LEARNER["dtype"]
    autocast_dtype: Literal["float32", "bfloat16", "float16"] | None = _LEARNER["autocast_dtype"]
    lr: float = Field(_LEARNER["lr"], gt=0)
    lr_schedule: Literal["constant", "constant_with_warmup", "linear", "cosine"] = _LEARNER["lr_schedule"]
    warmup_steps: int = Field(_LEARNER["warmup_steps"], ge=0)
    weight_decay: float = Field(_LEARNER["weight_decay"], ge=0)
    adam_betas: tuple[float, float] = _LEARNER["adam_betas"]
    adam_eps: float = Field(_LEARNER["adam_eps"], gt=0)
    max_grad_norm: float | None = Field(_LEARNER["max_grad_norm"], gt=0)  # None: no clipping
    gradient_checkpointing: bool = _LEARNER["gradient_checkpointing"]
    micro_batch_tokens: int | None = Field(_LEARNER["micro_batch_tokens"], gt=0)
    micro_batch_size: int | None = Field(_LEARNER["micro_batch_size"], gt=0)
    # "shared_prompt" runs each group's prompt once per micro-batch (rl/micro_batches.py), same gradients:
    # learner steps 23% faster on the demo model, 22% on a 30M one (needs sdpa). "packed" with
    # flash_attention_2 is the long-sequence GPU path (no dense masks); "padded" the plain one.
    layout: Literal["padded", "packed", "shared_prompt"] = _LEARNER["layout"]
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention"] = \
        _LEARNER["attn_implementation"]
    chunk_tokens: int = Field(_LEARNER["chunk_tokens"], gt=0)  # tokens per chunk of the LM head + log-softmax
    steps_per_batch: int = Field(_LEARNER["steps_per_batch"], ge=1)
    # Off-policy correction against the sampler's log-probs (rl/off_policy.py). auto: tis with the agapo
    # loss when samples can be off-policy (rollout.max_staleness > 0 or steps_per_batch > 1), else none.
    off_policy_correction: Literal["auto", "tis", "mis", "none"] = "auto"
    off_policy_cap: float = Field(_LEARNER["off_policy_cap"], gt=1)  # tis: weight min(ratio, cap); mis: ratio outside [1/cap, cap] dropped
    off_policy_level: Literal["sequence", "token"] = _LEARNER["off_policy_level"]  # sequence: unbiased below the cap
    fp32_lm_head: bool = _LEARNER["fp32_lm_head"]  # LM head and log-softmax in fp32 when the model runs in bf16
    lora: LoraSection | None = None  # e.g. {r: 16, alpha: 32}; null: full fine-tuning

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device != "auto" and device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"'{device}' is not auto, cpu, cuda or cuda:N")
        return device

    @model_validator(mode="after")
    def _placement_fits(self):
        if self.device.startswith("cuda") and not self.gpus_per_worker:
            raise ValueError(f"device '{self.device}' needs gpus_per_worker > 0 (Ray gives an actor no GPU otherwise)")
        if self.num_workers > 1 and 0 < self.gpus_per_worker < 1:
            raise ValueError(f"gpus_per_worker {self.gpus_per_worker}: several ranks may not share one GPU (NCCL); use 1")
        return self


class DatasetEntry(Section):
    path: str  # as data.train
    weight: float = Field(1.0, gt=0)  # drawn with probability weight / sum of weights (orchestration/data.py)
    columns: dict[str, str] | None = None  # this dataset's own data.columns


class DataConfig(Section):
    # A checkpoint folder with data/, a `datasets` folder, .parquet, .jsonl or .json, or a Hub name
    # (owner/name[:config]); or a weighted list [{path, weight}]. Default: the bootstrap train split.
    train: str | list[DatasetEntry] | None = None
    test: str | None = None
    columns: dict[str, str] = {}  # {name dualmode-rl reads: the dataset's column}, e.g. {answer: solution}
    reasoning_share: float | None = Field(None, ge=0, le=1)  # re-assign modes by this mix; None keeps the data's

    @model_validator(mode="after")
    def _train_list_not_empty(self):
        if isinstance(self.train, list) and not self.train:
            raise ValueError("train: an empty list; give a path or [{path, weight}, ...]")
        return self


class FilterConfig(Section):
    samples: int = Field(8, gt=0)
    out: str | None = None
    max_prompts: int | None = Field(None, gt=0)
    # Sample each prompt in both modes too; drop it only when every sample is right in both. The kept
    # row keeps its mode. Doubles the filter's sampling.
    joint: bool = False
    # Cut the kept set back to data.reasoning_share (the input's own share when that is unset) by
    # dropping a seeded (train.seed) random subset of the over-represented mode; rows are never duplicated.
    rebalance: bool = False


class TrainConfig(Section):
    out: str = "runs/train"
    steps: int = Field(20, gt=0)
    prompts_per_step: int = Field(16, gt=0)  # B
    save_every: int = Field(10, gt=0)
    seed: int = 0
    # Every eval_every steps (and at the last), pass@1 per mode on the first eval_limit problems of the test
    # split, as `dualmode-rl eval` scores them (eval.*), on the rollout workers: logged as eval/<mode>/accuracy.
    # Those steps are checkpointed, so the best (best_checkpoint.json) always exists. None: no evaluation.
    eval_every: int | None = Field(None, gt=0)
    eval_limit: int = Field(64, gt=0)
    # Where metrics go besides metrics.jsonl: TensorBoard (tensorboard/) and Weights & Biases (the
    # `wandb` extra; WANDB_MODE=offline writes the run under wandb/ to sync later) (orchestration/metrics.py).
    report_to: list[Literal["tensorboard", "wandb"]] = ["tensorboard"]
    wandb_project: str = "dualmode-rl"
    # Every this many steps, the first samples_logged prompts' first completion per mode go to samples.jsonl,
    # TensorBoard text and W&B, and into `dualmode-rl report`; 0 = never.
    log_samples_every: int = Field(10, ge=0)
    samples_logged: int = Field(2, gt=0)


class EvalConfig(Section):
    split: str = "test"
    # EXAONE 4.0 evaluates with each mode's recommended sampling (T=0.6 / top-p 0.95 when reasoning,
    # T < 0.6 otherwise), reporting pass@1 averaged over samples. Lengths are rollout.<mode>.max_tokens.
    reasoning: EvalSampling = EvalSampling(temperature=RECOMMENDED_TEMPERATURE[REASONING])
    non_reasoning: EvalSampling = EvalSampling(temperature=RECOMMENDED_TEMPERATURE[NON_REASONING])
    samples: int = Field(4, gt=0)
    greedy: bool = False  # true: one temperature-0 completion per problem and mode
    seed: int = 1234
    limit: int | None = Field(None, gt=0)
    # What "accuracy" means: this reward alone, >= 1 is correct. Not rewards.rewards, which may add
    # shaping terms (arithmetic_steps, length penalties) that training uses and accuracy must not.
    reward: str = "auto"


class DualModeConfig(Section):
    model: str | None = None  # an SFT checkpoint folder; default: the bootstrap output
    bootstrap: BootstrapConfig = BootstrapConfig()
    data: DataConfig = DataConfig()
    rollout: RolloutConfig = RolloutConfig()
    rewards: RewardsConfig = RewardsConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    learner: LearnerSection = LearnerSection()
    filter: FilterConfig = FilterConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @property
    def model_path(self) -> str:
        return self.model or self.bootstrap.out

    @model_validator(mode="after")
    def _overlong_buffer_fits(self):
        for mode in MODES:
            buffer, max_tokens = getattr(self.algorithm.overlong_buffer, mode), getattr(self.rollout, mode).max_tokens
            if buffer is not None and buffer > max_tokens:
                raise ValueError(f"config key 'algorithm.overlong_buffer.{mode}': {buffer} exceeds "
                                 f"rollout.{mode}.max_tokens={max_tokens}")
        return self

    @model_validator(mode="after")
    def _colocation_fits(self):
        """Colocated engines live in the learner's bundles (rollout/placement.py): one engine rank per
        learner rank, on its GPU or none."""
        r, learner = self.rollout, self.learner
        if r.placement != "colocated":
            return self
        check_colocation(r.num_workers, r.tensor_parallel_size, learner.num_workers)
        if r.gpus_per_worker is not None:
            raise ValueError("config key 'rollout.gpus_per_worker': colocated engines take the GPUs of the "
                             "learner's bundles (learner.gpus_per_worker); leave it unset")
        if learner.gpus_per_worker not in (0, 1):
            raise ValueError(f"config key 'learner.gpus_per_worker': {learner.gpus_per_worker}; colocated, each "
                             "rank's bundle holds one whole GPU that it shares with an engine rank: 1 (or 0 on CPU)")
        return self

    @model_validator(mode="after")
    def _learner_settings_agree(self):
        """The rules across sections (loss vs off-policy correction, layout vs attention, ...), as the
        learner will check them: before any Ray actor starts."""
        from .components import learner_config

        try:
            learner_config(self)
        except ValueError as err:  # LearnerConfig's field names are the learner.* keys
            raise ValueError(str(err).replace("LearnerConfig", "learner")) from None
        return self


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    node = tree
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[leaf] = value


def _merge(defaults: dict, given: dict) -> dict:
    """Given values over defaults, section by section, so `a.b.c=1` keeps the rest of `a.b`."""
    merged = dict(defaults)
    for key, value in given.items():
        base = defaults.get(key)
        merged[key] = _merge(base, value) if isinstance(base, dict) and isinstance(value, dict) else value
    return merged


def _describe(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"])
        reason = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        # a check across sections has no location: its message names the key
        lines.append(f"{source}: config key '{key}': {reason}" if key else f"{source}: {reason.removeprefix('Value error, ')}")
    return "\n".join(lines)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> DualModeConfig:
    tree: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            tree = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read config: {exc}") from exc
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: the config must be a mapping of sections")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}': expected key.sub=value")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    try:
        return DualModeConfig.model_validate(_merge(DualModeConfig().model_dump(), tree))
    except ValidationError as exc:
        origin = source if not overrides else f"{source} + overrides"
        raise ConfigError(_describe(exc, origin)) from None


def reward_spec(text: str, **overrides) -> RewardSpec:
    """A reward named on the command line: a name, or a `rewards.rewards` entry as inline YAML
    ("{name: trl.rewards:accuracy_reward, columns: {solution: answer}}"); `overrides` set its keys."""
    try:
        tree = yaml.safe_load(text) if text.lstrip().startswith("{") else {"name": text}
        return RewardSpec.model_validate({**tree, **{k: v for k, v in overrides.items() if v is not None}})
    except (yaml.YAMLError, AttributeError, TypeError) as exc:
        raise ConfigError(f"--reward {text!r}: not a reward name nor a {{name: ..., ...}} mapping: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(_describe(exc, f"--reward {text!r}").replace("config key '", "key '")) from None


RUN_CONFIG_FILE = "config.yaml"  # a run folder's copy of the config it ran with


def dump_config(config: DualModeConfig, path: Path) -> None:
    write_text_atomic(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
