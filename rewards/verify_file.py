"""`dualmode-rl verify`: score a JSONL file of completions with one reward.

Each line: `completion`, `mode` and the columns the reward reads; optionally `prompt` (a string or chat
messages, with `system`: what TRL-style rewards get as `prompts`) and `completion_ids` (the completion's
token ids; with a tokenizer given, rows without them are tokenized)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from dualmode_rl.atomic import atomic_path
from dualmode_rl.constants import MODES
from dualmode_rl.prompts import PromptError, prompt_messages
from dualmode_rl.rewards.jsonl import InputError, read_json_lines
from dualmode_rl.rewards.pool import ERROR_KEY, RewardPool, reward_metrics
from dualmode_rl.rewards.registry import load_reward
from dualmode_rl.rewards.types import RewardInput

_RESERVED = ("completion", "mode", "completion_ids")


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) for every row of a JSON-lines file, checked."""
    return checked_rows(read_json_lines(path), f"{path}: line")


def checked_rows(rows: list[tuple[int, dict]], where: str) -> list[tuple[int, dict]]:
    """`rows`, each checked for `completion`, `mode` and, when given, `prompt`; `where` + the number names a bad one."""
    for number, row in rows:
        if not isinstance(row.get("completion"), str):
            raise InputError(f"{where} {number}: missing string key 'completion'")
        if row.get("mode") not in MODES:
            raise InputError(f"{where} {number}: key 'mode' must be one of {MODES}, got {row.get('mode')!r}")
        if row.get("prompt") is not None:
            try:
                prompt_messages(row)
            except PromptError as bad:
                raise InputError(f"{where} {number}: {bad}") from None
    return rows


def reward_input(number: int, row: dict, tokenizer=None) -> RewardInput:
    """A row as the reward sees it in training: its `id` (naming it in errors) is its line number unless it has one."""
    ids = row.get("completion_ids")
    if ids is None and tokenizer is not None:
        ids = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
    return RewardInput(row["completion"], row["mode"], {"id": number, **{k: v for k, v in row.items() if k not in _RESERVED}},
                       completion_ids=ids, prompt=prompt_messages(row) if row.get("prompt") is not None else None)


def _plain(value):
    """A JSON-safe copy of an extra: non-finite floats become null, unknown objects their text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def verify_file(reward, input_path, output_path, num_workers: int = 2, timeout_s: float = 30.0,
                batch_size: int = 64, tokenizer: str | None = None, rows: list[tuple[int, dict]] | None = None) -> dict:
    """Scores every row with `reward` (a spec, or a reward loaded with its options by rewards.registry.load_reward);
    writes each back, as JSON lines, with `score`, `error` (could not score), `reason` (why not full marks) and
    the reward's `extras`. `tokenizer`: a model folder whose tokenizer gives rows without `completion_ids` theirs.
    `rows`: (number, row) read from `input_path` by the caller (a parquet file or dataset); default: its JSON lines.
    Returns a summary with the per-reward metrics training logs."""
    input_path, output_path = Path(input_path), Path(output_path)
    rows = read_rows(input_path) if rows is None else checked_rows(rows, f"{input_path}: row")
    reward = load_reward(reward) if isinstance(reward, str) else reward
    if tokenizer is not None:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        except Exception as exc:  # noqa: BLE001 - whatever transformers raises, the folder is at fault
            raise InputError(f"{tokenizer}: the tokenizer does not load: {type(exc).__name__}: {exc}") from None
    pool = RewardPool([(reward, 1.0)], num_workers=num_workers, timeout_s=timeout_s, batch_size=batch_size)
    try:
        outputs = pool.score([reward_input(number, row, tokenizer) for number, row in rows])
    finally:
        pool.close()
    prefix = f"{reward.name}/"
    with atomic_path(output_path) as tmp, tmp.open("w") as f:
        for (_, row), out in zip(rows, outputs):
            extras = {k[len(prefix):]: _plain(v) for k, v in out.extras.items()
                      if k.startswith(prefix) and k != prefix + ERROR_KEY}
            f.write(json.dumps({**row, "score": out.score, "error": out.error, "reason": out.reason, "extras": extras},
                               allow_nan=False, default=str) + "\n")
    scores = [o.score for o in outputs]
    return {"rows": len(rows), "mean_score": sum(scores) / len(scores), "errors": sum(o.error is not None for o in outputs),
            "output": str(output_path), "reward_errors": dict(pool.error_counts),
            "metrics": reward_metrics(outputs, [row["mode"] for _, row in rows])}
