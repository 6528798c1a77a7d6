"""The built-in policy: a tiny model of EXAONE 4.0 architecture."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import Exaone4Config, Exaone4ForCausalLM, PreTrainedTokenizerBase


@dataclass
class TinyModelShape:
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 4  # 3 sliding-window layers then 1 global, as in EXAONE-4.0-32B
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    sliding_window: int = 64
    max_position_embeddings: int = 1024


def build_tiny_model(tokenizer: PreTrainedTokenizerBase, shape: TinyModelShape, seed: int) -> Exaone4ForCausalLM:
    torch.manual_seed(seed)
    config = Exaone4Config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        head_dim=shape.hidden_size // shape.num_attention_heads,
        max_position_embeddings=shape.max_position_embeddings,
        sliding_window=shape.sliding_window,
        sliding_window_pattern=4,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    return Exaone4ForCausalLM(config)
