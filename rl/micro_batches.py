"""Micro-batches of sequences (prompt + completion) for the learner's forward passes, two layouts:

- "padded" (default): sequences sorted by length, right-padded to the longest of their
  micro-batch, NO attention mask. With causal attention a real token only sees earlier
  positions, which are all real, so trailing padding can never leak into a real token; the
  model takes its fast causal path (is_causal sdpa / flash) and sorting keeps padding small.
- "packed" (padding-free): sequences end to end in one row with `position_ids` restarting at 0
  and no attention mask; transformers builds a block-diagonal causal mask from the position ids
  (sdpa and eager included). Best with attn_implementation="flash_attention_2" on GPUs; on the
  CPU sdpa path the dense block mask makes it slower than "padded".
- "shared_prompt": one row per distinct prompt, its completions after it: `prompt c1 c2 ... cG`,
  each completion's positions continuing from the prompt's, and a tree attention mask (a token sees
  the prompt and the earlier tokens of its own completion; sliding-window layers also the window),
  built by the policy from `segment_ids`. The G samples of an RL group share one prompt, which is
  then run, and back-propagated through, once instead of G times: same log-probs and gradients, a
  fifth less compute for the usual prompt:completion ratios. Needs attn_implementation="sdpa".

Tests check all three against one-sequence-at-a-time log-probs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LAYOUTS = ("padded", "packed", "shared_prompt")


@dataclass
class MicroBatch:
    sequence_indices: list[int]  # positions in the TrainingBatch
    input_ids: torch.Tensor  # [R, L]
    position_ids: torch.Tensor | None  # [R, L] for "packed"; None = 0..L-1 in every row
    hidden_index: torch.Tensor  # [n] flat index (row * L + column) of the hidden state predicting each completion token
    labels: torch.Tensor  # [n] completion token ids
    rows: torch.Tensor  # [n] sequence of each completion token in the [N, T] view
    cols: torch.Tensor  # [n] token index within its completion
    mask: torch.Tensor  # [N, T] 1.0 on completion tokens
    segment_ids: torch.Tensor | None = None  # "shared_prompt": [R, L] 0 prompt, j completion j, -1 padding

    @property
    def num_tokens(self) -> int:
        """Positions the model runs on, padding included."""
        return self.input_ids.numel()

    def to_padded(self, flat: torch.Tensor) -> torch.Tensor:
        """[n] per-completion-token values -> [N, T], zeros on padding."""
        return flat.new_zeros(self.mask.shape).index_put((self.rows, self.cols), flat)

    def token_values(self, per_sequence: list[float]) -> torch.Tensor:
        """One value per sequence (indexed like the TrainingBatch) -> [n], one per completion token."""
        values = torch.tensor([per_sequence[i] for i in self.sequence_indices], dtype=torch.float32,
                              device=self.mask.device)
        return values[self.rows]

    def padded_values(self, per_sequence: list[list[float]]) -> torch.Tensor:
        """Per-sequence lists (indexed like the TrainingBatch) -> [N, T] float32."""
        flat = [v for i in self.sequence_indices for v in per_sequence[i]]
        return self.to_padded(torch.tensor(flat, dtype=torch.float32, device=self.mask.device))


def build_micro_batch(prompts: list[list[int]], completions: list[list[int]], indices: list[int],
                      layout: str = "padded", pad_id: int = 0, device: torch.device | str = "cpu") -> MicroBatch:
    if layout not in LAYOUTS:
        raise ValueError(f"micro-batch layout: unknown '{layout}'; known: {LAYOUTS}")
    if layout == "shared_prompt":
        return _shared_prompt_micro_batch(prompts, completions, indices, pad_id, device)
    packed = layout == "packed"
    width = max(len(prompts[i]) + len(completions[i]) for i in indices)
    rows_of_ids, positions, hidden_index, labels, rows, cols = [], [], [], [], [], []
    offset = 0
    for row, i in enumerate(indices):
        prompt, completion = prompts[i], completions[i]
        length = len(prompt) + len(completion)
        tokens = prompt + completion
        start = offset + len(prompt) - 1  # hidden state before the first completion token
        if packed:
            rows_of_ids.extend(tokens)
            positions.extend(range(length))
            offset += length
        else:
            rows_of_ids.append(tokens + [pad_id] * (width - length))
            offset += width
        hidden_index.extend(range(start, start + len(completion)))
        labels.extend(completion)
        rows.extend([row] * len(completion))
        cols.extend(range(len(completion)))

    def long(values):
        return torch.tensor(values, dtype=torch.long, device=device)

    rows_t, cols_t = long(rows), long(cols)
    mask = torch.zeros(len(indices), max(len(completions[i]) for i in indices), device=device)
    mask[rows_t, cols_t] = 1.0
    return MicroBatch(
        sequence_indices=list(indices),
        input_ids=long(rows_of_ids)[None] if packed else long(rows_of_ids),
        position_ids=long(positions)[None] if packed else None,
        hidden_index=long(hidden_index), labels=long(labels), rows=rows_t, cols=cols_t, mask=mask)


def _shared_prompt_micro_batch(prompts: list[list[int]], completions: list[list[int]], indices: list[int],
                               pad_id: int, device: torch.device | str) -> MicroBatch:
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for row, i in enumerate(indices):  # row: the sequence's row in the [N, T] view
        by_prompt.setdefault(tuple(prompts[i]), []).append(row)
    width = max(len(p) + sum(len(completions[indices[r]]) for r in rows) for p, rows in by_prompt.items())
    ids, positions, segments, hidden_index, labels, rows_t, cols = [], [], [], [], [], [], []
    for group, (prompt, members) in enumerate(by_prompt.items()):
        base = group * width
        row_ids, row_pos, row_seg = list(prompt), list(range(len(prompt))), [0] * len(prompt)
        for segment, row in enumerate(members, start=1):
            completion = completions[indices[row]]
            start = len(row_ids)
            hidden_index += [base + len(prompt) - 1] + [base + start + t for t in range(len(completion) - 1)]
            row_ids += completion
            row_pos += range(len(prompt), len(prompt) + len(completion))
            row_seg += [segment] * len(completion)
            labels += completion
            rows_t += [row] * len(completion)
            cols += range(len(completion))
        padding = width - len(row_ids)
        ids.append(row_ids + [pad_id] * padding)
        positions.append(row_pos + [0] * padding)
        segments.append(row_seg + [-1] * padding)

    def long(values):
        return torch.tensor(values, dtype=torch.long, device=device)

    rows_v, cols_v = long(rows_t), long(cols)
    mask = torch.zeros(len(indices), max(len(completions[i]) for i in indices), device=device)
    mask[rows_v, cols_v] = 1.0
    return MicroBatch(sequence_indices=list(indices), input_ids=long(ids), position_ids=long(positions),
                      hidden_index=long(hidden_index), labels=long(labels), rows=rows_v, cols=cols_v, mask=mask,
                      segment_ids=long(segments))


def shared_prompt_attention(position_ids: torch.Tensor, segment_ids: torch.Tensor,
                            sliding_window: int | None = None) -> torch.Tensor:
    """[R, 1, L, L] boolean mask (True = attend) for the "shared_prompt" layout: causal, the prompt
    (segment 0) visible to every completion, completions invisible to each other; with
    `sliding_window`, only keys fewer than that many positions back. Padding sees only itself."""
    length = segment_ids.shape[1]
    index = torch.arange(length, device=segment_ids.device)
    causal = index[None, :, None] >= index[None, None, :]
    seg_q, seg_k = segment_ids[:, :, None], segment_ids[:, None, :]
    visible = causal & (seg_k >= 0) & ((seg_k == 0) | (seg_k == seg_q)) & (seg_q >= 0)
    if sliding_window is not None:
        visible &= (position_ids[:, :, None] - position_ids[:, None, :]) < sliding_window
    visible |= torch.eye(length, dtype=torch.bool, device=segment_ids.device)[None]
    return visible[:, None]


def plan_micro_batches(lengths: list[int], indices: list[int], max_tokens: int | None,
                       max_sequences: int | None, layout: str = "padded") -> list[list[int]]:
    """Greedy split of `indices` into micro-batches of at most `max_tokens` model positions
    (padding included) and at most `max_sequences` sequences. "padded" sorts by length first,
    longest first; "packed" and "shared_prompt" keep the given order (an RL batch lists a group's
    samples together, so they share micro-batches). A sequence above `max_tokens` goes alone."""
    order = sorted(indices, key=lambda i: (-lengths[i], i)) if layout == "padded" else list(indices)
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current:
            if layout == "padded":  # rows x longest row; the first one is the longest
                cost = (len(current) + 1) * max(lengths[current[0]], lengths[i])
            else:
                cost = sum(lengths[j] for j in current) + lengths[i]
            if (max_tokens is not None and cost > max_tokens) or (
                    max_sequences is not None and len(current) >= max_sequences):
                groups.append(current)
                current = []
        current.append(i)
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
