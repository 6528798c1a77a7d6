"""Supervised fine-tuning of the tiny model on both modes with TRL's SFTTrainer."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from trl import SFTConfig, SFTTrainer

from dualmode_rl.constants import REASONING

log = logging.getLogger(__name__)


# The think block of an unworked example: the answer follows without the work (BootstrapConfig.unworked_share).
UNWORKED_THOUGHT = "I can answer this directly."


def sft_reasoning(task: dict) -> str:
    """What the SFT example's think block holds: the worked steps, or for an unworked row none."""
    return task["reasoning"] if task.get("worked", True) else UNWORKED_THOUGHT


def sft_example(task: dict, mode: str) -> dict:
    """A conversational prompt-completion row; TRL renders it through the chat template in `mode`."""
    answer = {"role": "assistant", "content": task["solution"]}
    if mode == REASONING:
        answer["reasoning_content"] = sft_reasoning(task)
    return {
        "prompt": [{"role": "user", "content": task["prompt"]}],
        "completion": [answer],
        "chat_template_kwargs": {"enable_thinking": mode == REASONING},
    }


class _TimeLimit(TrainerCallback):
    """A safety cap: stopping on time makes the result depend on machine speed, so it only warns."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def on_step_end(self, args, state, control, **kwargs):
        if time.monotonic() > self.deadline:
            log.warning("SFT stopped by its time limit at step %d of %d", state.global_step, state.max_steps)
            control.should_training_stop = True


def run_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict],
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    time_limit_s: float,
    work_dir: Path,
) -> dict:
    args = SFTConfig(
        output_dir=str(work_dir),
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        weight_decay=0.01,
        max_length=256,
        logging_steps=max(1, steps // 10),
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        disable_tqdm=False,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        callbacks=[_TimeLimit(time_limit_s)],
    )
    started = time.monotonic()
    result = trainer.train()
    return {
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "seconds": round(time.monotonic() - started, 1),
    }
