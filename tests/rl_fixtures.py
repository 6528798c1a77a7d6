"""Shared helpers for the rl tests: tiny random Exaone4 checkpoints and hand-made batches."""
from __future__ import annotations

import random
import warnings
from pathlib import Path

import torch

from dualmode_rl.rl.batch import TrainingBatch


def tiny_exaone_config(vocab_size: int = 64, hidden_size: int = 32, layers: int = 2, sliding: bool = True, **extra):
    from transformers import Exaone4Config

    kwargs = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                  num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                  head_dim=hidden_size // 2, max_position_embeddings=256, bos_token_id=0, eos_token_id=1,
                  pad_token_id=2)
    if sliding:  # local layers first, the last one global, as EXAONE 4.0 32B
        kwargs.update(sliding_window=8, sliding_window_pattern=layers)
    else:
        kwargs.update(sliding_window=None, layer_types=["full_attention"] * layers)
    kwargs.update(extra)
    return Exaone4Config(**kwargs)


def save_tiny_tokenizer(directory: Path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<s>": 0, "</s>": 1, "<pad>": 2}
    vocab.update({f"t{i}": i for i in range(3, vocab_size)})
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<pad>")
    fast.save_pretrained(directory)


def make_tiny_exaone(directory: Path, seed: int = 0, dtype=torch.float32, **config_kwargs) -> Path:
    """A random-weight Exaone4ForCausalLM (+ word-level tokenizer) saved to `directory`."""
    from transformers import Exaone4ForCausalLM

    torch.manual_seed(seed)
    config = tiny_exaone_config(**config_kwargs)
    model = Exaone4ForCausalLM(config).to(dtype)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    save_tiny_tokenizer(directory, config.vocab_size)
    return directory


def random_batch(num_prompts: int, group_size: int, vocab_size: int, seed: int = 0,
                 prompt_len=(2, 9), completion_len=(1, 12)) -> TrainingBatch:
    rng = random.Random(seed)
    prompts, completions, advantages, groups, modes = [], [], [], [], []
    for g in range(num_prompts):
        prompt = [rng.randrange(3, vocab_size) for _ in range(rng.randint(*prompt_len))]
        for _ in range(group_size):
            prompts.append(prompt)
            completions.append([rng.randrange(3, vocab_size) for _ in range(rng.randint(*completion_len))])
            advantages.append(rng.uniform(-1.0, 1.0))
            groups.append(g)
            modes.append("reasoning" if g % 2 else "non_reasoning")
    return TrainingBatch(prompt_ids=prompts, completion_ids=completions, advantages=advantages,
                         group_ids=groups, modes=modes)


def make_trl_trainer(model_dir, output_dir, **config):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(output_dir=str(output_dir), num_generations=4, per_device_train_batch_size=4,
                      report_to=[], use_cpu=True, bf16=False, **config)
    trainer = GRPOTrainer(model=str(model_dir), args=args,
                          reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                          train_dataset=Dataset.from_dict({"prompt": ["t3 t4"] * 8}))
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which is not running here
    trainer.model.train()
    return trainer
