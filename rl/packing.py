"""Padding-free micro-batches: sequences packed end to end in one row.

Each packed row carries `position_ids` that restart at 0 for every sequence and no attention
mask; transformers (>= 4.54, sdpa and eager included) then builds a block-diagonal causal mask
from the position ids, so sequences never attend to each other (`tests/test_rl_learner.py`
checks packed log-probs against one-sequence-at-a-time log-probs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PackedMicroBatch:
    sequence_indices: list[int]  # positions in the TrainingBatch
    input_ids: torch.Tensor  # [1, L]
    position_ids: torch.Tensor  # [1, L]
    hidden_index: torch.Tensor  # [n] pack position whose hidden state predicts each completion token
    labels: torch.Tensor  # [n] completion token ids
    rows: torch.Tensor  # [n] row of each completion token in the [N, T] padded view
    cols: torch.Tensor  # [n] column (token index within its completion)
    mask: torch.Tensor  # [N, T] 1.0 on completion tokens

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[1])

    def to_padded(self, flat: torch.Tensor) -> torch.Tensor:
        """[n] per-completion-token values -> [N, T], zeros on padding."""
        return flat.new_zeros(self.mask.shape).index_put((self.rows, self.cols), flat)

    def padded_values(self, per_sequence: list[list[float]]) -> torch.Tensor:
        """Per-sequence lists (indexed like the TrainingBatch) -> [N, T] float32."""
        flat = [v for i in self.sequence_indices for v in per_sequence[i]]
        return self.to_padded(torch.tensor(flat, dtype=torch.float32, device=self.mask.device))


def pack_sequences(prompts: list[list[int]], completions: list[list[int]], indices: list[int],
                   device: torch.device | str = "cpu") -> PackedMicroBatch:
    ids, positions, hidden_index, labels, rows, cols = [], [], [], [], [], []
    offset = 0
    for row, i in enumerate(indices):
        prompt, completion = prompts[i], completions[i]
        length = len(prompt) + len(completion)
        ids.extend(prompt)
        ids.extend(completion)
        positions.extend(range(length))
        start = offset + len(prompt) - 1  # hidden state before the first completion token
        hidden_index.extend(range(start, start + len(completion)))
        labels.extend(completion)
        rows.extend([row] * len(completion))
        cols.extend(range(len(completion)))
        offset += length
    max_len = max(len(completions[i]) for i in indices)
    mask = torch.zeros(len(indices), max_len)
    rows_t = torch.tensor(rows, dtype=torch.long)
    cols_t = torch.tensor(cols, dtype=torch.long)
    mask[rows_t, cols_t] = 1.0

    def long(values):
        return torch.tensor(values, dtype=torch.long, device=device)

    return PackedMicroBatch(
        sequence_indices=list(indices),
        input_ids=long(ids)[None],
        position_ids=long(positions)[None],
        hidden_index=long(hidden_index),
        labels=long(labels),
        rows=rows_t.to(device),
        cols=cols_t.to(device),
        mask=mask.to(device),
    )


def plan_micro_batches(lengths: list[int], indices: list[int], max_tokens: int | None,
                       max_sequences: int | None) -> list[list[int]]:
    """Greedy, in order: fill a micro-batch until the next sequence would pass `max_tokens`
    tokens or `max_sequences` sequences. A sequence longer than `max_tokens` goes alone."""
    groups: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in indices:
        too_many_tokens = max_tokens is not None and current and tokens + lengths[i] > max_tokens
        too_many_seqs = max_sequences is not None and len(current) >= max_sequences
        if too_many_tokens or too_many_seqs:
            groups.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += lengths[i]
    if current:
        groups.append(current)
    return groups


def shard_for_rank(lengths: list[int], world_size: int, rank: int) -> list[int]:
    """Deterministic token-balanced split: longest first, each to the least-loaded rank."""
    if world_size == 1:
        return list(range(len(lengths)))
    loads = [0] * world_size
    owner = [0] * len(lengths)
    for i in sorted(range(len(lengths)), key=lambda j: (-lengths[j], j)):
        target = min(range(world_size), key=lambda r: (loads[r], r))
        owner[i] = target
        loads[target] += lengths[i]
    return [i for i in range(len(lengths)) if owner[i] == rank]
