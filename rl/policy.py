"""The trainable policy and its frozen reference: loading, optional LoRA, log-probs, export.

Reference = the starting checkpoint, frozen. With LoRA the reference is the same module with
its adapters disabled, not a second copy.
"""
from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dualmode_rl.rl.micro_batches import MicroBatch, shared_prompt_attention
from dualmode_rl.rl.token_logprobs import DEFAULT_CHUNK_TOKENS, chosen_token_logprobs

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json")


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


def _check_supported(hf_model) -> None:
    config = hf_model.config.get_text_config()
    for attr in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
        if getattr(config, attr, None) not in (None, 1.0):
            raise ValueError(f"model {config.model_type}: '{attr}' is set; the chunked log-prob path does not apply it")


class Policy:
    def __init__(self, model_path: str, dtype: str = "float32", device: str = "cpu",
                 lora: LoraSettings | None = None, gradient_checkpointing: bool = False,
                 need_reference: bool = True, attn_implementation: str = "sdpa",
                 chunk_tokens: int = DEFAULT_CHUNK_TOKENS, fp32_lm_head: bool = True):
        from transformers import AutoModelForCausalLM

        self.model_path = model_path
        self.chunk_tokens = chunk_tokens
        self.fp32_lm_head = fp32_lm_head
        self.device = torch.device(device)

        def load():
            return AutoModelForCausalLM.from_pretrained(
                model_path, dtype=torch_dtype(dtype), attn_implementation=attn_implementation).to(self.device)

        self.hf_model = load()
        _check_supported(self.hf_model)
        if gradient_checkpointing:
            self.hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.lora = lora
        self.model = self.hf_model
        if lora is not None:
            self.model = self._add_lora(lora)
        self.model.train()  # no dropout in these models; train mode keeps gradient checkpointing active
        self.ref_model = None
        if need_reference and lora is None:
            self.ref_model = load().eval().requires_grad_(False)

    def _add_lora(self, lora: LoraSettings):
        from peft import LoraConfig, get_peft_model

        if "lm_head" in lora.target_modules:
            raise ValueError("lora.target_modules: 'lm_head' is not supported (the chunked log-prob path reads its weight)")
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
        return get_peft_model(self.hf_model, config)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def _reference_mode(self):
        if self.lora is None:
            if self.ref_model is None:
                raise RuntimeError("reference log-probs requested but the learner was built without a reference (beta == 0)")
            yield self.ref_model
        else:
            with self.model.disable_adapter():
                yield self.hf_model

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
            return self._forward(self.hf_model, micro_batch, temperature)

    def _attention_mask(self, hf_model, micro_batch: MicroBatch):
        """None (the model's own causal masks), or the "shared_prompt" tree masks for each layer type."""
        if micro_batch.segment_ids is None:
            return None
        config = hf_model.config.get_text_config()
        if config._attn_implementation != "sdpa":
            raise ValueError(f"micro-batch layout 'shared_prompt' needs attn_implementation='sdpa', "
                             f"got {config._attn_implementation!r}")
        layer_types = set(getattr(config, "layer_types", None) or [])
        full = shared_prompt_attention(micro_batch.position_ids, micro_batch.segment_ids)
        if not layer_types:
            return full
        return {kind: shared_prompt_attention(micro_batch.position_ids, micro_batch.segment_ids, config.sliding_window)
                if kind == "sliding_attention" else full for kind in layer_types}

    def _forward(self, hf_model, micro_batch: MicroBatch, temperature: torch.Tensor | None = None):
        backbone = hf_model.base_model
        hidden = backbone(input_ids=micro_batch.input_ids, position_ids=micro_batch.position_ids,
                          attention_mask=self._attention_mask(hf_model, micro_batch),
                          use_cache=False).last_hidden_state
        hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, micro_batch.hidden_index)
        weight = hf_model.get_output_embeddings().weight
        logprobs, entropy = chosen_token_logprobs(hidden, weight, micro_batch.labels, self.chunk_tokens,
                                                  temperature, self.fp32_lm_head)
        return micro_batch.to_padded(logprobs), micro_batch.to_padded(entropy)

    # ---- export -------------------------------------------------------------------------

    def _is_tied(self) -> bool:
        return self.hf_model.get_output_embeddings().weight is self.hf_model.get_input_embeddings().weight

    @torch.no_grad()
    def export_weights(self, merged: bool = True) -> dict[str, torch.Tensor]:
        """Hugging Face parameter names -> tensors (detached; LoRA merged, or adapters only).
        A tied `lm_head.weight` is left out, as `save_pretrained` does."""
        if self.lora is not None and not merged:
            from peft import get_peft_model_state_dict

            return {k: v.detach() for k, v in get_peft_model_state_dict(self.model).items()}
        weights = self._merged_lora_weights() if self.lora is not None else {}
        for key, tensor in self.hf_model.state_dict().items():
            if "lora_" in key:
                continue
            name = key.replace(".base_layer.", ".")
            weights.setdefault(name, tensor.detach())
        if self._is_tied():
            weights.pop("lm_head.weight", None)
        return weights

    def _merged_lora_weights(self) -> dict[str, torch.Tensor]:
        from peft.tuners.lora import LoraLayer

        merged = {}
        for name, module in self.hf_model.named_modules():
            if isinstance(module, LoraLayer):
                weight = module.get_base_layer().weight.detach().clone()
                for adapter in module.active_adapters:
                    weight += module.get_delta_weight(adapter).to(weight.dtype)
                merged[f"{name}.weight"] = weight
        return merged

    def save_pretrained(self, directory: str | Path) -> None:
        """The policy (LoRA merged) as a Hugging Face folder with safetensors, plus the tokenizer
        files of the starting checkpoint when it has them."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.export_weights(merged=True).items()}
        self.hf_model.save_pretrained(directory, state_dict=state)
        for name in TOKENIZER_FILES:
            source = Path(self.model_path) / name
            if source.is_file() and not (directory / name).exists():
                shutil.copy2(source, directory / name)
