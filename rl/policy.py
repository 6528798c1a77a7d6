"""The trainable policy and its frozen reference: loading, optional LoRA, FSDP2 sharding, log-probs, export.

Reference = the starting checkpoint, frozen. With LoRA the reference is the same module with
its adapters disabled, not a second copy.

Precision: `dtype` is the checkpoint's ("auto" reads it from the folder): the frozen weights stay
in it, the policy is exported and saved in it. The weights the optimizer updates are kept in fp32
(master weights; LoRA adapters too), so updates near 1e-6 do not round away in bf16; the forward
runs in the compute dtype (autocast, and FSDP2's mixed-precision policy).
"""
from __future__ import annotations

import contextlib
import copy
import json
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from dualmode_rl.rl.micro_batches import MicroBatch, shared_prompt_attention
from dualmode_rl.rl.token_logprobs import DEFAULT_CHUNK_TOKENS, chosen_token_logprobs

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json")
MAX_SHARD_SIZE = "5GB"  # safetensors file size in a saved policy folder, as transformers' save_pretrained


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype '{name}'; known: {sorted(DTYPES)}")
    return DTYPES[name]


def checkpoint_dtype(model_path: str | Path) -> str:
    """The dtype a Hugging Face folder stores its weights in: config.json's `dtype` (`torch_dtype` in
    older files), else the first tensor's in its first safetensors file, else float32."""
    path = Path(model_path)
    config_file = path / "config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text())
        name = config.get("dtype") or config.get("torch_dtype")
        if name in DTYPES:
            return name
    for weights in sorted(path.glob("*.safetensors")):
        with weights.open("rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        for key, entry in header.items():
            if key != "__metadata__":
                return SAFETENSORS_DTYPES.get(entry["dtype"], "float32")
    return "float32"


def _check_supported(hf_model) -> None:
    config = hf_model.config.get_text_config()
    for attr in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
        if getattr(config, attr, None) not in (None, 1.0):
            raise ValueError(f"model {config.model_type}: '{attr}' is set; the chunked log-prob path does not apply it")


def decoder_layers(causal_lm) -> list[torch.nn.Module]:
    """The transformer blocks, found by the class names the model declares unsplittable."""
    names = set(getattr(causal_lm, "_no_split_modules", None) or [])
    layers = [m for m in causal_lm.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"{type(causal_lm).__name__}: no decoder layers found (_no_split_modules = {sorted(names)})")
    return layers


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """A full tensor from a DTensor shard (an all-gather: every rank must call it), else the tensor."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


class TokenLogprobs(torch.nn.Module):
    """A causal LM's backbone and its chunked LM head in ONE forward: per-completion-token log-prob and
    entropy of softmax(logits / T). Under FSDP2 this module is the root unit that owns the embedding
    and LM head, so the head's weight is gathered while the head reads it."""

    def __init__(self, causal_lm, chunk_tokens: int = DEFAULT_CHUNK_TOKENS, fp32_lm_head: bool = True):
        super().__init__()
        self.causal_lm = causal_lm
        self.chunk_tokens = chunk_tokens
        self.fp32_lm_head = fp32_lm_head

    def forward(self, input_ids, position_ids, attention_mask, hidden_index, labels, temperature=None):
        hidden = self.causal_lm.base_model(input_ids=input_ids, position_ids=position_ids,
                                           attention_mask=attention_mask, use_cache=False).last_hidden_state
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, hidden_index)
        weight = self.causal_lm.get_output_embeddings().weight
        return chosen_token_logprobs(hidden, weight, labels, self.chunk_tokens, temperature, self.fp32_lm_head)


class Policy:
    def __init__(self, model_path: str, dtype: str = "auto", device: str | torch.device = "cpu",
                 lora: LoraSettings | None = None, gradient_checkpointing: bool = False,
                 need_reference: bool = True, attn_implementation: str = "sdpa",
                 chunk_tokens: int = DEFAULT_CHUNK_TOKENS, fp32_lm_head: bool = True):
        from transformers import AutoModelForCausalLM

        self.model_path = model_path
        self.device = torch.device(device)
        self.dtype = checkpoint_dtype(model_path) if dtype == "auto" else dtype

        def load():
            return AutoModelForCausalLM.from_pretrained(
                model_path, dtype=torch_dtype(self.dtype), attn_implementation=attn_implementation).to(self.device)

        self.hf_model = load()
        _check_supported(self.hf_model)
        self.tied = self.hf_model.get_output_embeddings().weight is self.hf_model.get_input_embeddings().weight
        if gradient_checkpointing:
            self.hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.lora = lora
        self.model = self.hf_model
        if lora is not None:
            self.model = self._add_lora(lora)  # PEFT keeps the adapters in fp32 over a bf16 base
        elif torch_dtype(self.dtype).itemsize < 4:
            self.hf_model.float()  # fp32 master weights (a float64 checkpoint keeps float64)
        self.model.train()  # no dropout in these models; train mode keeps gradient checkpointing active
        self.module = TokenLogprobs(self.hf_model, chunk_tokens, fp32_lm_head)
        self.ref_module = None
        if need_reference and lora is None:
            self.ref_module = TokenLogprobs(load().eval().requires_grad_(False), chunk_tokens, fp32_lm_head)
        self._plan = self._export_plan()

    def _add_lora(self, lora: LoraSettings):
        from peft import LoraConfig, get_peft_model

        if "lm_head" in lora.target_modules:
            raise ValueError("lora.target_modules: 'lm_head' is not supported (the chunked log-prob path reads its weight)")
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
        return get_peft_model(self.hf_model, config)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def shard(self, compute_dtype: torch.dtype | None) -> None:
        """FSDP2: `fully_shard` each decoder layer, then the whole TokenLogprobs module (embedding, final
        norm, LM head) as the root, for the policy and the reference. Parameters stay fp32 (sharded);
        forward and backward run in `compute_dtype`, gradients are reduced in fp32 and SUMMED across
        ranks (the losses are already normalised by batch-wide totals). Without a 16-bit compute dtype
        everything stays in the parameters' dtype."""
        from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

        precision = MixedPrecisionPolicy(param_dtype=compute_dtype,
                                         reduce_dtype=torch.float32 if compute_dtype is not None else None,
                                         cast_forward_inputs=False)
        # LoRA adapters: units of their own, gathered and reduced in fp32 (PEFT computes them in their
        # dtype). A unit reduces its gradients in one dtype, and FSDP2 decides which of its parameters need
        # a cast back at the first forward, which may be the reference's, adapters disabled (PEFT then
        # marks them frozen): fp32 gradients need no cast.
        fp32 = MixedPrecisionPolicy(cast_forward_inputs=False)
        for module in (self.module, self.ref_module):
            if module is None:
                continue
            for layer in decoder_layers(module.causal_lm):
                for adapter in self._adapters(layer):
                    fully_shard(adapter, mp_policy=fp32)
                fully_shard(layer, mp_policy=precision)
            fully_shard(module, mp_policy=precision)
        for unit in self.module.modules():
            if isinstance(unit, FSDPModule):
                unit.set_gradient_divide_factor(1.0)
                unit.set_force_sum_reduction_for_comms(True)  # a plain SUM: gloo has no pre-multiplied sum

    def _adapters(self, layer: torch.nn.Module) -> list[torch.nn.Module]:
        """The LoRA modules in `layer` that hold trainable weights."""
        if self.lora is None:
            return []
        return [m for m in layer.modules()
                if m is not layer and any(p.requires_grad for p in m.parameters(recurse=False))]

    @contextlib.contextmanager
    def _reference_mode(self):
        if self.lora is None:
            if self.ref_module is None:
                raise RuntimeError("reference log-probs requested but the learner was built without a reference (beta == 0)")
            yield self.ref_module
        else:
            with self.model.disable_adapter():
                yield self.module

    def token_logprobs(self, micro_batch: MicroBatch, reference: bool = False,
                       autocast_dtype: torch.dtype | None = None,
                       temperature: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-completion-token (logprob, entropy) of softmax(logits / temperature), each [N, T] fp32,
        zeros on padding; `temperature` is per completion token, in micro_batch.labels' order (None: 1).
        Differentiable for the policy; computed under no_grad for the reference."""
        autocast = (torch.autocast(self.device.type, dtype=autocast_dtype) if autocast_dtype is not None
                    else contextlib.nullcontext())
        if reference:
            with torch.no_grad(), self._reference_mode() as ref, autocast:
                return self._forward(ref, micro_batch, temperature)
        with autocast:
            return self._forward(self.module, micro_batch, temperature)

    def _attention_mask(self, module: TokenLogprobs, micro_batch: MicroBatch):
        """None (the model's own causal masks), or the "shared_prompt" tree masks for each layer type."""
        if micro_batch.segment_ids is None:
            return None
        config = module.causal_lm.config.get_text_config()
        if config._attn_implementation != "sdpa":
            raise ValueError(f"micro-batch layout 'shared_prompt' needs attn_implementation='sdpa', "
                             f"got {config._attn_implementation!r}")
        layer_types = set(getattr(config, "layer_types", None) or [])
        full = shared_prompt_attention(micro_batch.position_ids, micro_batch.segment_ids)
        if not layer_types:
            return full
        return {kind: shared_prompt_attention(micro_batch.position_ids, micro_batch.segment_ids, config.sliding_window)
                if kind == "sliding_attention" else full for kind in layer_types}

    def _forward(self, module: TokenLogprobs, micro_batch: MicroBatch, temperature: torch.Tensor | None = None):
        logprobs, entropy = module(micro_batch.input_ids, micro_batch.position_ids,
                                   self._attention_mask(module, micro_batch), micro_batch.hidden_index,
                                   micro_batch.labels, temperature)
        return micro_batch.to_padded(logprobs), micro_batch.to_padded(entropy)

    # ---- export -------------------------------------------------------------------------

    def _export_plan(self) -> list[tuple[str, str, list[tuple[str, str, float]]]]:
        """(Hugging Face name, key in `self.module`'s state dict, LoRA (A key, B key, scaling) to merge
        into it). A tied `lm_head.weight` is left out, as `save_pretrained` does."""
        merges: dict[str, list[tuple[str, str, float]]] = {}
        if self.lora is not None:
            from peft.tuners.lora import LoraLayer

            for name, layer in self.module.named_modules():
                if isinstance(layer, LoraLayer):
                    merges[f"{name}.base_layer.weight"] = [
                        (f"{name}.lora_A.{a}.weight", f"{name}.lora_B.{a}.weight", layer.scaling[a])
                        for a in layer.active_adapters]
        plan = []
        for key in self.module.state_dict():
            if "lora_" in key:
                continue
            name = key.removeprefix("causal_lm.").replace(".base_layer.", ".")
            if not (self.tied and name == "lm_head.weight"):
                plan.append((name, key, merges.get(key, [])))
        return plan

    def _hf_weights(self, tensor_of: Callable[[str], torch.Tensor], plan=None) -> Iterator[tuple[str, torch.Tensor]]:
        for name, key, merges in self._plan if plan is None else plan:
            tensor = tensor_of(key).detach()
            if merges:
                tensor = tensor.float() + sum(tensor_of(b).float() @ tensor_of(a).float() * s for a, b, s in merges)
            yield name, tensor.to(torch_dtype(self.dtype))

    @torch.no_grad()
    def iter_weights(self, merged: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
        """Hugging Face names -> full tensors in the checkpoint dtype, LoRA merged; or (merged=False) the
        adapter weights only, by their state-dict names. Under FSDP2 each tensor is gathered as it is reached:
        a collective, so every rank must iterate in lockstep."""
        state = self.module.state_dict()
        if self.lora is not None and not merged:
            for key, tensor in state.items():
                if "lora_" in key:
                    yield key.removeprefix("causal_lm."), _full(tensor)
            return
        yield from self._hf_weights(lambda key: _full(state[key]))

    def _update_plan(self):
        """The export plan's weights that training changes: all, or with LoRA the adapted modules'."""
        return [entry for entry in self._plan if entry[2]] if self.lora is not None else self._plan

    def update_metadata(self) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
        """(Hugging Face name, dtype, full shape) of each tensor `iter_update` yields, in its order; no gather."""
        state = self.module.state_dict()
        return [(name, torch_dtype(self.dtype), tuple(state[key].shape)) for name, key, _ in self._update_plan()]

    @torch.no_grad()
    def iter_update(self) -> Iterator[tuple[str, torch.Tensor]]:
        """What a weight update sends the rollout engines: every weight (a tied lm_head.weight left out), or
        with LoRA only the merged target modules' weights (nothing else changes). A collective under FSDP2,
        as `iter_weights`."""
        state = self.module.state_dict()
        yield from self._hf_weights(lambda key: _full(state[key]), self._update_plan())

    def save_pretrained(self, directory: str | Path) -> None:
        """The policy (LoRA merged, checkpoint dtype) as a Hugging Face folder with safetensors, plus the
        tokenizer files of the starting checkpoint when it has them. Gathered with torch's
        `get_model_state_dict` (full, offloaded to rank 0's CPU): every rank calls, rank 0 writes."""
        from huggingface_hub import save_torch_state_dict
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not state:  # not rank 0
            return
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = copy.deepcopy(self.hf_model.config)
        config.dtype = torch_dtype(self.dtype)
        config.save_pretrained(directory)
        save_torch_state_dict(dict(self._hf_weights(state.__getitem__)), directory, max_shard_size=MAX_SHARD_SIZE)
        for name in TOKENIZER_FILES:
            source = Path(self.model_path) / name
            if source.is_file() and not (directory / name).exists():
                shutil.copy2(source, directory / name)

