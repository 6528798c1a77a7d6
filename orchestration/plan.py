"""`dualmode-rl plan CONFIG`: memory per GPU for the learner and for vLLM, from the model's config.json
and the config's placement, without loading any weights.

Learner (per rank): parameters, gradients and AdamW state of the trained weights (fp32 masters; sharded
over the ranks with fsdp2, whole on each with ddp), the frozen weights (reference model, LoRA base) in
the checkpoint dtype, the weights gathered or cast for compute, activations at learner.micro_batch_tokens,
and the LM head's chunk. vLLM (per GPU of an engine): weights over tensor_parallel_size, and what is left
of rollout.gpu_memory_utilization x the GPU for the KV cache. Estimates, stated with their formulas in
docs/gpu-cluster.md; vLLM's own activation peak and the CUDA context come on top.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dualmode_rl.rl.policy import checkpoint_dtype

from .components import learner_config
from .config import ConfigError, DualModeConfig

GIB = 2**30
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "float64": 8}
ADAM_STATES = 2  # exp_avg, exp_avg_sq


@dataclass
class ModelShape:
    """What the memory depends on, from a Hugging Face config.json (its text_config for multimodal ones)."""

    model_type: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool

    @classmethod
    def from_folder(cls, folder: str | Path) -> "ModelShape":
        path = Path(folder) / "config.json"
        if not path.is_file():
            raise ConfigError(f"{path}: no config.json (model: must be a Hugging Face model folder)")
        config = json.loads(path.read_text())
        text = config.get("text_config", config)
        try:
            heads = text["num_attention_heads"]
            return cls(model_type=text.get("model_type", "?"), hidden=text["hidden_size"],
                       layers=text["num_hidden_layers"], heads=heads,
                       kv_heads=text.get("num_key_value_heads") or heads,
                       head_dim=text.get("head_dim") or text["hidden_size"] // heads,
                       intermediate=text["intermediate_size"], vocab=text["vocab_size"],
                       tied=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))))
        except KeyError as missing:
            raise ConfigError(f"{path}: no {missing} (a decoder-only transformer's config.json is expected)") from None

    def layer_parameters(self) -> int:
        """Attention (q, k, v, o) and gated MLP (gate, up, down) weights; the norms are a few vectors more."""
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return attention + 3 * self.hidden * self.intermediate + 2 * self.hidden + 2 * self.head_dim

    def root_parameters(self) -> int:
        """Embedding, final norm and (untied) LM head: FSDP2's root unit."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.hidden

    def parameters(self) -> int:
        return self.layers * self.layer_parameters() + self.root_parameters()

    def lora_parameters(self, r: int, targets: list[str]) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        shapes = {"q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
                  "o_proj": (q, self.hidden), "gate_proj": (self.hidden, self.intermediate),
                  "up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden)}
        return self.layers * sum(r * sum(shapes[t]) for t in targets if t in shapes)

    def activation_bytes_per_token_layer(self, compute_bytes: int) -> int:
        """Tensors one layer keeps for backward, per token, with a fused (flash / memory-efficient) attention:
        the layer input and 4 norm/residual tensors of `hidden`, q, k, v, the attention output and the
        o_proj input, gate, up, their product and the activation."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return compute_bytes * (5 * self.hidden + 3 * q + 2 * kv + 4 * self.intermediate)

    def describe(self) -> str:
        return (f"{self.model_type}: {self.parameters() / 1e9:.2f}B parameters, hidden {self.hidden}, "
                f"{self.layers} layers, {self.heads} heads ({self.kv_heads} KV, head dim {self.head_dim}), "
                f"intermediate {self.intermediate}, vocab {self.vocab}, {'tied' if self.tied else 'untied'} embeddings")


def learner_rows(cfg: DualModeConfig, shape: ModelShape) -> list[tuple[str, float]]:
    lc = learner_config(cfg)
    dtype = checkpoint_dtype(cfg.model_path) if lc.dtype == "auto" else lc.dtype
    compute = lc.autocast_dtype or dtype
    ranks = cfg.learner.num_workers
    shards = ranks if lc.strategy == "fsdp2" else 1
    share = f", 1/{shards} shard" if shards > 1 else ""
    total = shape.parameters()
    trained = shape.lora_parameters(lc.lora.r, lc.lora.target_modules) if lc.lora else total
    frozen = (total if lc.lora else 0) + (total if lc.beta and not lc.lora else 0)
    frozen_what = " + ".join(what for what, on in (("LoRA base", lc.lora), ("reference", lc.beta and not lc.lora)) if on)
    if lc.strategy == "fsdp2":  # the layer being computed and the next one (prefetch), and the root unit
        gathered, gathered_what = 2 * shape.layer_parameters() + shape.root_parameters(), "2 layers + embeddings"
    else:  # autocast caches a compute-dtype copy of each weight during the forward
        gathered, gathered_what = (total if compute != "float32" else 0), "autocast copies"
    tokens, c = lc.micro_batch_tokens or 0, BYTES[compute]
    per_layer = shape.activation_bytes_per_token_layer(c)
    if lc.gradient_checkpointing:  # each layer's input, plus one layer recomputed in backward
        activations = tokens * (shape.layers * shape.hidden * c + per_layer)
        activations_what = f"{tokens} tokens, gradient checkpointing"
    else:
        activations, activations_what = tokens * shape.layers * per_layer, f"{tokens} tokens, no checkpointing"
    head = lc.chunk_tokens * shape.vocab * (4 + 4 + c)  # fp32 logits and softmax, gradient of the logits
    return [
        (f"parameters (fp32 masters{share})", 4 * trained / shards),
        (f"gradients (fp32{share})", 4 * trained / shards),
        (f"optimizer state (AdamW, fp32{share})", ADAM_STATES * 4 * trained / shards),
        (f"frozen weights ({frozen_what or 'none'}, {dtype}{share})", BYTES[dtype] * frozen / shards),
        (f"weights for compute ({compute}, {gathered_what})", BYTES[compute] * gathered),
        (f"activations ({activations_what})", activations),
        (f"LM head chunk ({lc.chunk_tokens} tokens x {shape.vocab} vocab)", head),
    ]


def vllm_dtype(cfg: DualModeConfig) -> str:
    """The dtype GPU rollout engines load the weights in: rollout.dtype, "auto" being the checkpoint's."""
    return checkpoint_dtype(cfg.model_path) if cfg.rollout.dtype == "auto" else cfg.rollout.dtype


def vllm_rows(cfg: DualModeConfig, shape: ModelShape, gpu_memory_gib: float) -> list[tuple[str, float]]:
    from dualmode_rl.rollout.vllm_engine import COLOCATED_GPU_SHARE, GPU_MEMORY_SHARE

    from .components import model_max_length

    r, dtype = cfg.rollout, vllm_dtype(cfg)
    tp = r.tensor_parallel_size
    share = r.gpu_memory_utilization or (COLOCATED_GPU_SHARE if r.placement == "colocated" else GPU_MEMORY_SHARE)
    max_len = r.max_model_len or model_max_length(cfg.model_path)
    weights = BYTES[dtype] * shape.parameters() / tp
    budget = share * gpu_memory_gib * GIB
    kv_per_token = 2 * shape.layers * max(1, shape.kv_heads // tp) * shape.head_dim * BYTES[dtype]
    kv = max(0.0, budget - weights)
    tokens = int(kv // kv_per_token)
    return [(f"weights ({dtype}, tensor parallel {tp})", weights),
            (f"KV cache ({share} x {gpu_memory_gib:g} GiB - weights): {tokens:,} tokens, "
             f"{tokens // max_len} sequences of {max_len}", kv)]


def _table(title: str, rows: list[tuple[str, float]]) -> list[str]:
    lines = [f"| {title} | GiB |", "|---|---:|"]
    lines += [f"| {what} | {size / GIB:.2f} |" for what, size in rows]
    return lines + [f"| **total** | **{sum(size for _, size in rows) / GIB:.2f}** |"]


def plan(cfg: DualModeConfig, gpu_memory_gib: float = 80.0) -> str:
    shape = ModelShape.from_folder(cfg.model_path)
    lc, rollout = learner_config(cfg), cfg.rollout
    learner_gpus = cfg.learner.num_workers * cfg.learner.gpus_per_worker
    engine_gpus = rollout.tensor_parallel_size if rollout.gpus_per_worker is None else rollout.gpus_per_worker
    rollout_gpus = 0 if rollout.placement == "colocated" else rollout.num_workers * engine_gpus
    device = f"{cfg.learner.gpus_per_worker:g} GPU" if cfg.learner.gpus_per_worker else "CPU"
    learner = learner_rows(cfg, shape)
    lines = [f"model: {cfg.model_path} ({shape.describe()})",
             f"placement: learner {cfg.learner.num_workers} rank(s) x {device} ({lc.strategy}), rollout "
             f"{rollout.num_workers} engine(s) x {engine_gpus:g} GPU (tensor parallel "
             f"{rollout.tensor_parallel_size}) = {learner_gpus + rollout_gpus:g} GPUs of {gpu_memory_gib:g} GiB", "",
             *_table("learner, per rank", learner), "", *_table("vLLM, per GPU", vllm_rows(cfg, shape, gpu_memory_gib))]
    if cfg.learner.gpus_per_worker and sum(size for _, size in learner) > gpu_memory_gib * GIB:
        lines += ["", f"warning: the learner needs more than {gpu_memory_gib:g} GiB per GPU: add ranks (fsdp2), "
                      "turn on gradient checkpointing or lower learner.micro_batch_tokens"]
    if rollout.placement == "colocated" and cfg.learner.gpus_per_worker:
        lines += ["", colocated_line(learner, vllm_rows(cfg, shape, gpu_memory_gib), gpu_memory_gib)]
    return "\n".join(lines)


def colocated_line(learner: list[tuple[str, float]], vllm: list[tuple[str, float]], gpu_memory_gib: float) -> str:
    """Colocated, a GPU holds a learner rank and an engine rank. While the engine generates, the learner
    keeps its state (the first four rows: parameters, gradients, optimizer state, frozen weights); while
    the learner steps, the engine sleeps (level 1: weights to CPU memory, KV cache dropped)."""
    resident, engine = sum(size for _, size in learner[:4]), sum(size for _, size in vllm)
    line = (f"colocated, per GPU: generating, the learner's resident {resident / GIB:.2f} GiB + vLLM's "
            f"{engine / GIB:.2f} GiB = **{(resident + engine) / GIB:.2f}** GiB; stepping, vLLM sleeps and the "
            f"learner's {sum(size for _, size in learner) / GIB:.2f} GiB apply")
    if resident + engine > gpu_memory_gib * GIB:
        line += f"\nwarning: more than {gpu_memory_gib:g} GiB while generating: lower rollout.gpu_memory_utilization"
    return line
