"""Prompt datasets: the bootstrap task suite by default, or a user's `datasets` folder or JSONL file."""
from __future__ import annotations

import random
from pathlib import Path

from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from dualmode_rl.rewards.jsonl import InputError, read_json_lines
from dualmode_rl.rollout.types import MODES, GenerationRequest

from .bootstrap import DATA_DIR


class DataError(InputError):
    """A dataset is missing, unreadable, empty or has a bad row; the message names the file and row (from 1)."""


def load_split(source: str | Path, split: str) -> Dataset:
    """`source` is a checkpoint folder holding `data/`, a `datasets` folder, or a .jsonl file."""
    path = Path(source)
    if (path / DATA_DIR).is_dir():
        path = path / DATA_DIR
    if path.suffix == ".jsonl" and path.is_file():
        try:
            read_json_lines(path)  # every line an object, or an error naming the line (or the empty file)
        except InputError as bad_line:
            raise DataError(str(bad_line)) from None
        try:
            return load_dataset("json", data_files=str(path), split="train")
        except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; all mean "unreadable"
            raise DataError(f"{path}: cannot read JSON lines: {exc}") from exc
    if not path.exists():
        raise DataError(f"{path}: no such dataset (expected a checkpoint folder, a `datasets` folder or a .jsonl)")
    try:
        data = load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: not a `datasets` folder: {exc}") from exc
    if isinstance(data, DatasetDict):
        if split not in data:
            raise DataError(f"{path}: has no split {split!r} (splits: {sorted(data)})")
        return _not_empty(data[split], f"{path} (split {split!r})")
    return _not_empty(data, path)


def _not_empty(dataset: Dataset, source) -> Dataset:
    if len(dataset) == 0:
        raise DataError(f"{source}: no rows")
    return dataset


def check_rows(dataset: Dataset, source: str, required: tuple[str, ...] = ("prompt", "mode")) -> None:
    missing = [key for key in required if key not in dataset.column_names]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; columns are {dataset.column_names}")
    for row, mode in enumerate(dataset["mode"], 1):
        if mode not in MODES:
            raise DataError(f"{source}: row {row}: mode {mode!r} is not one of {MODES}")
    for row, prompt in enumerate(dataset["prompt"], 1):
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{source}: row {row}: 'prompt' must be a non-empty string")


def with_mode_mix(dataset: Dataset, reasoning_share: float, seed: int) -> Dataset:
    rng = random.Random(seed)
    modes = ["reasoning" if rng.random() < reasoning_share else "non_reasoning" for _ in range(len(dataset))]
    if "mode" in dataset.column_names:
        dataset = dataset.remove_columns("mode")
    return dataset.add_column("mode", modes)


def request_for(row: dict, mode: str | None = None, n: int = 1) -> GenerationRequest:
    mode = mode or row["mode"]
    return GenerationRequest(request_id=f"{row.get('id', '')}:{mode}", prompt=row["prompt"], mode=mode, n=n)


def default_source(cfg) -> str:
    """The model's bundled task suite, else the bootstrap checkpoint's (a trained policy has none)."""
    if (Path(cfg.model_path) / DATA_DIR).is_dir():
        return cfg.model_path
    return cfg.bootstrap.out


def load_prompts(cfg, source: str | Path, split: str) -> Dataset:
    """A prompt split, with modes re-drawn when `data.reasoning_share` is set, checked row by row. Rows
    without an `id` column get their row number (from 1) as `id`, which names them in reward errors."""
    dataset = load_split(source, split)
    if cfg.data.reasoning_share is not None:
        dataset = with_mode_mix(dataset, cfg.data.reasoning_share, cfg.train.seed)
    check_rows(dataset, str(source))
    if "id" not in dataset.column_names:
        dataset = dataset.add_column("id", list(range(1, len(dataset) + 1)))
    return dataset
