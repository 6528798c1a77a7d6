"""`dualmode-rl bootstrap`: the built-in SFT checkpoint every other command starts from by default."""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict

from dualmode_rl.atomic import atomic_path
from dualmode_rl.constants import NON_REASONING, REASONING

from ..config import BootstrapConfig
from .model import TinyModelShape, build_tiny_model
from .sft import UNWORKED_THOUGHT, run_sft, sft_example
from .tasks import generate_tasks, task_rows
from .tokenizer import train_tokenizer

log = logging.getLogger(__name__)
DATA_DIR = "data"  # inside the checkpoint folder: the task suite as a `datasets` DatasetDict
INFO_FILE = "bootstrap.json"


# Settings that change how long the build takes or where it lands, not what it builds.
_BUILD_ONLY = {"out", "sft_time_limit_s", "torch_threads"}


def _build_settings(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in _BUILD_ONLY}


def is_bootstrapped(out: str | Path, cfg: BootstrapConfig) -> bool:
    """A checkpoint is at `out`, built with `cfg`'s settings (an older build is stale, not reused)."""
    info = Path(out) / INFO_FILE
    if not info.is_file():
        return False
    if _build_settings(json.loads(info.read_text())["config"]) == _build_settings(cfg.model_dump(mode="json")):
        return True
    log.info("bootstrap checkpoint at %s was built with other settings: rebuilding", out)
    return False


def _assign_modes(rows: list[dict], tokenizer, ratio: float, rng: random.Random) -> None:
    """Give each training row a mode so reasoning:non-reasoning tokens come out at `ratio`."""
    rng.shuffle(rows)
    tokens = {REASONING: 0, NON_REASONING: 0}
    for row in rows:
        mode = REASONING if tokens[REASONING] <= ratio * tokens[NON_REASONING] else NON_REASONING
        example = sft_example(row, mode)
        text = tokenizer.apply_chat_template(
            example["prompt"] + example["completion"], tokenize=False, enable_thinking=mode == REASONING
        )
        tokens[mode] += len(tokenizer(text)["input_ids"])
        row["mode"] = mode
    log.info("SFT tokens by mode: %s (ratio %.2f)", tokens, tokens[REASONING] / max(1, tokens[NON_REASONING]))


def bootstrap(cfg: BootstrapConfig, out: str | Path | None = None) -> Path:
    """Generate the task suite, train the tokenizer, SFT the tiny model; write it all atomically."""
    out = Path(out or cfg.out)
    torch.set_num_threads(cfg.torch_threads or os.cpu_count() or 1)
    rng = random.Random(cfg.seed)
    splits = generate_tasks(
        {"train": cfg.train_size, "validation": cfg.validation_size, "test": cfg.test_size}, cfg.code_share, cfg.seed,
        cfg.max_operand,
    )
    rows = {name: task_rows(tasks) for name, tasks in splits.items()}
    for name, split in rows.items():
        for row in split:
            row["worked"] = not (name == "train" and row["domain"] == "math" and rng.random() < cfg.unworked_share)
    corpus = [f"{r['prompt']}\n{r['reasoning']}\n{r['solution']}" + ("" if r["worked"] else f"\n{UNWORKED_THOUGHT}")
              for r in rows["train"]]
    tokenizer = train_tokenizer(corpus, cfg.vocab_size, cfg.number_tokens)
    _assign_modes(rows["train"], tokenizer, cfg.reasoning_token_ratio, rng)
    for name in ("validation", "test"):  # evaluated in both modes; the column records a default
        for i, row in enumerate(rows[name]):
            row["mode"] = REASONING if i % 2 == 0 else NON_REASONING

    model = build_tiny_model(tokenizer, TinyModelShape(**cfg.shape.model_dump()), cfg.seed)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        stats = run_sft(
            model, tokenizer, [sft_example(r, r["mode"]) for r in rows["train"]],
            steps=cfg.sft_steps, batch_size=cfg.sft_batch_size, learning_rate=cfg.sft_learning_rate,
            seed=cfg.seed, time_limit_s=cfg.sft_time_limit_s, work_dir=tmp / "sft_work",
        )
        shutil.rmtree(tmp / "sft_work", ignore_errors=True)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        DatasetDict({name: Dataset.from_list(r) for name, r in rows.items()}).save_to_disk(str(tmp / DATA_DIR))
        info = {"config": cfg.model_dump(mode="json"), "sft": stats,
                "parameters": sum(p.numel() for p in model.parameters())}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2))
    log.info("bootstrap checkpoint written to %s (%s)", out, stats)
    return out
