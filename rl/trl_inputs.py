"""A TrainingBatch in the padded layout TRL's GRPOTrainer consumes (for comparisons and benchmarks):
prompts left-padded, completions right-padded, as `_generate_and_score_completions` returns them."""
from __future__ import annotations

import torch

from dualmode_rl.rl.batch import TrainingBatch


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def trl_grpo_inputs(batch: TrainingBatch, pad_id: int) -> dict[str, torch.Tensor]:
    prompt_ids, prompt_mask = _pad(batch.prompt_ids, pad_id, left=True)
    completion_ids, completion_mask = _pad(batch.completion_ids, pad_id, left=False)
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "advantages": torch.tensor(batch.advantages, dtype=torch.float32),
            "num_items_in_batch": completion_mask.sum()}
