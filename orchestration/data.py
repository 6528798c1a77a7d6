"""Prompt datasets, in the ecosystem's formats as they are: the bootstrap task suite by default, or the user's.

Sources: a checkpoint folder holding `data/`, a `datasets` folder (save_to_disk), a .parquet, .jsonl or
.json file, or a Hugging Face Hub dataset (`owner/name`, `owner/name:config`) through
`datasets.load_dataset`, where the Hub is reachable.

Formats (each row's prompt is read by dualmode_rl.prompts, the one row path):
- dualmode-rl's own: `prompt` (a string), `mode`, `answer`, `domain`, optional `system`;
- verl's RL parquet: `prompt` (chat messages), `data_source`, `ability`, `reward_model.ground_truth`,
  `extra_info`: the row gains `answer` (= reward_model.ground_truth) and `domain` (= ability) unless
  it has them;
- TRL's prompt-only sets: `prompt` (a string or messages) and the answer under any name.
`data.columns` maps the names dualmode-rl reads to the dataset's own (`{answer: solution}`: the answer
is in column `solution`). The mode: the `mode` column, else `extra_info.mode`, else drawn with
`data.reasoning_share` (which, when set, re-draws every row's mode).
"""
from __future__ import annotations

import random
import re
from pathlib import Path

from datasets import Dataset, DatasetDict, interleave_datasets, load_dataset, load_from_disk

from dualmode_rl.prompts import PROMPT_COLUMNS, PromptError, prompt_messages
from dualmode_rl.rewards.jsonl import InputError, read_json_lines
from dualmode_rl.rollout.types import MODES, NON_REASONING, REASONING, GenerationRequest

from .bootstrap import DATA_DIR

FILE_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$")  # owner/name[:config]


class DataError(InputError):
    """A dataset is missing, unreadable, empty or has a bad row; the message names the file and row (from 1)."""


def load_split(source: str | Path, split: str) -> Dataset:
    """`split` of `source` as it is: see the module doc for the sources."""
    path = Path(source)
    if (path / DATA_DIR).is_dir():
        path = path / DATA_DIR
    if path.suffix in FILE_FORMATS and path.is_file():
        return _not_empty(_read_file(path), path)
    if not path.exists():
        if path.suffix not in FILE_FORMATS and HUB_NAME.match(str(source)):
            return _not_empty(_from_hub(str(source), split), source)
        raise DataError(f"{path}: no such dataset (expected a checkpoint folder, a `datasets` folder, "
                        f"a {', '.join(FILE_FORMATS)} file, or a Hub name owner/name)")
    try:
        data = load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{path}: not a `datasets` folder: {exc}") from exc
    if isinstance(data, DatasetDict):
        if split not in data:
            raise DataError(f"{path}: has no split {split!r} (splits: {sorted(data)})")
        return _not_empty(data[split], f"{path} (split {split!r})")
    return _not_empty(data, path)


def _read_file(path: Path) -> Dataset:
    if path.suffix == ".jsonl":
        try:
            read_json_lines(path)  # every line an object, or an error naming the line (or the empty file)
        except InputError as bad_line:
            raise DataError(str(bad_line)) from None
    try:
        return load_dataset(FILE_FORMATS[path.suffix], data_files=str(path), split="train")
    except Exception as exc:  # noqa: BLE001 - datasets raises many kinds; all mean "unreadable"
        raise DataError(f"{path}: cannot read it as {FILE_FORMATS[path.suffix]}: {exc}") from exc


def _from_hub(name: str, split: str) -> Dataset:
    repo, _, config = name.partition(":")
    try:
        return load_dataset(repo, config or None, split=split)
    except ConnectionError as exc:
        raise DataError(
            f"{name}: no such local file or folder, and the Hugging Face Hub is not reachable from here to load it "
            f"as a Hub dataset ({exc}). Where the Hub is reachable, save it (save_to_disk or to_parquet) and pass "
            "that folder or file.") from None
    except Exception as exc:  # noqa: BLE001 - not found, no such split or config: all mean "not loadable"
        raise DataError(f"{name}: no such local file or folder, nor a loadable Hub dataset: "
                        f"{type(exc).__name__}: {exc}") from None


def _not_empty(dataset: Dataset, source) -> Dataset:
    if len(dataset) == 0:
        raise DataError(f"{source}: no rows")
    return dataset


def renamed(dataset: Dataset, columns: dict[str, str], source: str) -> Dataset:
    """`columns` {name dualmode-rl reads: the dataset's column} applied; the name may replace a column."""
    missing = sorted(set(columns.values()) - set(dataset.column_names))
    if missing:
        raise DataError(f"{source}: data.columns names column(s) {missing} the dataset lacks; its columns are "
                        f"{dataset.column_names}")
    moves = {theirs: ours for ours, theirs in columns.items() if ours != theirs}
    replaced = [ours for ours in moves.values() if ours in dataset.column_names and ours not in moves]
    return dataset.remove_columns(replaced).rename_columns(moves) if moves else dataset


def with_verl_fields(dataset: Dataset) -> Dataset:
    """verl's RL format: `answer` from reward_model.ground_truth, `domain` from ability, unless present."""
    names = dataset.column_names
    if "answer" not in names and "reward_model" in names:
        dataset = dataset.add_column("answer", [_field(rm, "ground_truth") for rm in dataset["reward_model"]])
    if "domain" not in names and "ability" in names:
        dataset = dataset.add_column("domain", dataset["ability"])
    return dataset


def _field(mapping, key: str):
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if value is None or isinstance(value, str) else str(value)


def with_modes(dataset: Dataset, reasoning_share: float | None, seed: int) -> Dataset:
    """Each row's mode: drawn by `reasoning_share` when set, else the `mode` column, else extra_info.mode."""
    if reasoning_share is not None:
        return with_mode_mix(dataset, reasoning_share, seed)
    if "mode" not in dataset.column_names and "extra_info" in dataset.column_names:
        dataset = dataset.add_column("mode", [_field(info, "mode") for info in dataset["extra_info"]])
    return dataset


def with_mode_mix(dataset: Dataset, reasoning_share: float, seed: int) -> Dataset:
    rng = random.Random(seed)
    modes = [REASONING if rng.random() < reasoning_share else NON_REASONING for _ in range(len(dataset))]
    if "mode" in dataset.column_names:
        dataset = dataset.remove_columns("mode")
    return dataset.add_column("mode", modes)


def check_rows(dataset: Dataset, source: str, need_mode: bool = True) -> None:
    """Every row's prompt renders (dualmode_rl.prompts) and, with `need_mode`, its mode is known."""
    if "prompt" not in dataset.column_names:
        raise DataError(f"{source}: missing column(s) ['prompt']; columns are {dataset.column_names} "
                        "(data.columns maps a column of another name: {{prompt: question}})")
    if need_mode and "mode" not in dataset.column_names:
        raise DataError(f"{source}: missing column(s) ['mode']; columns are {dataset.column_names}: give each row a "
                        f"mode ({' or '.join(MODES)}) in a `mode` column or extra_info.mode, or set "
                        "data.reasoning_share to draw them")
    columns = [c for c in (*PROMPT_COLUMNS, "mode") if c in dataset.column_names]
    for number, row in enumerate(dataset.select_columns(columns), 1):
        if need_mode and row["mode"] not in MODES:
            raise DataError(f"{source}: row {number}: mode {row['mode']!r} is not one of {MODES}")
        try:
            prompt_messages(row)
        except PromptError as bad:
            raise DataError(f"{source}: row {number}: {bad}") from None


def completion_rows(source: str, columns: dict[str, str]) -> list[tuple[int, dict]]:
    """`dualmode-rl verify`'s rows from a parquet file, a `datasets` folder or a Hub name: as training reads
    them (`columns`, verl's fields, the mode from its column or extra_info), numbered from 1."""
    dataset = with_modes(with_verl_fields(renamed(load_split(source, "train"), columns, source)), None, 0)
    return list(enumerate(dataset, 1))


def request_for(row: dict, mode: str | None = None, n: int = 1) -> GenerationRequest:
    """Training's and eval's request for a row, named by its id and mode."""
    mode = mode or row["mode"]
    return GenerationRequest.for_row(row, f"{row.get('id', '')}:{mode}", mode, n)


def default_source(cfg) -> str:
    """The model's bundled task suite, else the bootstrap checkpoint's (a trained policy has none)."""
    if (Path(cfg.model_path) / DATA_DIR).is_dir():
        return cfg.model_path
    return cfg.bootstrap.out


def load_prompts(cfg, source, split: str, need_mode: bool = True) -> Dataset:
    """A prompt split (`source`: a path or Hub name, or data.train's weighted list of {path, weight}),
    renamed by data.columns, with verl's fields and the modes, checked row by row. Rows without an `id`
    column get their row number (from 1) as `id`, which names them in reward errors."""
    if not isinstance(source, list):
        return _prepared(cfg, str(source), split, cfg.data.columns, need_mode)
    parts = [_prepared(cfg, entry.path, split, cfg.data.columns if entry.columns is None else entry.columns,
                       need_mode) for entry in source]
    if len(parts) == 1:
        return parts[0]
    return mixed(parts, [entry.weight for entry in source], [entry.path for entry in source], cfg.train.seed)


def _prepared(cfg, source: str, split: str, columns: dict[str, str], need_mode: bool) -> Dataset:
    dataset = with_verl_fields(renamed(load_split(source, split), columns, source))
    if need_mode:
        dataset = with_modes(dataset, cfg.data.reasoning_share, cfg.train.seed)
    check_rows(dataset, source, need_mode)
    if "id" not in dataset.column_names:
        dataset = dataset.add_column("id", list(range(1, len(dataset) + 1)))
    return dataset


def mixed(parts: list[Dataset], weights: list[float], names: list[str], seed: int) -> Dataset:
    """One dataset drawing from each part with probability weight / sum of weights, until every part has
    been drawn in full (datasets.interleave_datasets, "all_exhausted"): a part of twice the weight comes
    up twice as often, the smaller ones repeating. Prompts become message lists (their `system` column
    folded in) and ids `source:id`, so the parts' columns line up; a column of different types in two
    parts is an error naming it."""
    parts = [_mixable(part, name) for part, name in zip(parts, names)]
    columns = list(dict.fromkeys(c for part in parts for c in part.column_names))
    parts = [_with_columns(part, columns) for part in parts]
    total = sum(weights)
    try:
        return interleave_datasets(parts, probabilities=[w / total for w in weights], seed=seed,
                                   stopping_strategy="all_exhausted")
    except ValueError as exc:
        raise DataError(f"data.train: cannot mix {', '.join(names)}: {exc} (data.columns, or a dataset entry's "
                        "own `columns`, can rename a column that means different things)") from None


def _mixable(part: Dataset, name: str) -> Dataset:
    prompts = [prompt_messages(row) for row in part.select_columns([c for c in PROMPT_COLUMNS if c in part.column_names])]
    ids = [f"{name}:{i}" for i in part["id"]]
    part = part.remove_columns([c for c in (*PROMPT_COLUMNS, "id") if c in part.column_names])
    return part.add_column("prompt", prompts).add_column("id", ids)


def _with_columns(part: Dataset, columns: list[str]) -> Dataset:
    for column in columns:
        if column not in part.column_names:
            part = part.add_column(column, [None] * len(part))
    return part.select_columns(columns)
