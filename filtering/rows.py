"""Prompt rows of the dataset to filter: validation (naming the source and row), identity, requests."""
from __future__ import annotations

import hashlib
import json
from typing import Iterator

from datasets import Dataset

from dualmode_rl.rewards.types import RewardInput
from dualmode_rl.rollout.types import MODES, GenerationRequest, Sample

REQUIRED_COLUMNS = ("prompt", "mode")
SCAN_BATCH = 1024


class FilterDataError(ValueError):
    """The dataset to filter is unusable; the message names the source and, for a bad row, its number (from 1)."""


def dataset_source(dataset: Dataset) -> str:
    """A name for error messages: the dataset's first backing file, or '<in-memory dataset>'."""
    files = getattr(dataset, "cache_files", None) or []
    return files[0]["filename"] if files else "<in-memory dataset>"


def scan_rows(dataset: Dataset, source: str) -> str:
    """Check every row (streaming, constant memory) and return a fingerprint of the whole content."""
    missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise FilterDataError(f"{source}: missing column(s) {missing}; columns are {dataset.column_names}")
    digest = hashlib.sha256(json.dumps(sorted(dataset.column_names)).encode())
    for start, batch in _batches(dataset):
        for offset, row in enumerate(_rows_of(batch)):
            check_row(row, source, start + offset + 1)
            digest.update(json.dumps(row, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def check_row(row: dict, source: str, number: int) -> None:
    """`number`: the row's number, from 1, as every message about rows gives it."""
    if row.get("mode") not in MODES:
        raise FilterDataError(f"{source}: row {number}: 'mode' is {row.get('mode')!r}, expected one of {MODES}")
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise FilterDataError(f"{source}: row {number}: 'prompt' must be a non-empty string, got {prompt!r:.80}")
    system = row.get("system")
    if system is not None and not isinstance(system, str):
        raise FilterDataError(f"{source}: row {number}: 'system' must be a string, got {type(system).__name__}")


def read_rows(dataset: Dataset, start: int, stop: int) -> list[dict]:
    return _rows_of(dataset[start:stop])


def other_mode(mode: str) -> str:
    return next(m for m in MODES if m != mode)


def request_for(row: dict, index: int, samples: int, mode: str | None = None) -> GenerationRequest:
    """The request for row `index` in its own mode (id "index"), or in `mode` (id "index:mode")."""
    request_id = str(index) if mode in (None, row["mode"]) else f"{index}:{mode}"
    return GenerationRequest(
        request_id=request_id, prompt=row["prompt"], mode=mode or row["mode"], n=samples, system=row.get("system")
    )


def reward_inputs(row: dict, samples: list[Sample], mode: str | None = None) -> list[RewardInput]:
    """Samples of `row` in its own mode, or in `mode` (plug-ins are handed the sample's mode)."""
    return [RewardInput(completion=s.text, mode=mode or row["mode"], reference=row) for s in samples]


def _batches(dataset: Dataset) -> Iterator[tuple[int, dict]]:
    for start in range(0, len(dataset), SCAN_BATCH):
        yield start, dataset[start:start + SCAN_BATCH]


def _rows_of(batch: dict) -> list[dict]:
    columns = list(batch)
    count = len(batch[columns[0]]) if columns else 0
    return [{c: batch[c][i] for c in columns} for i in range(count)]
