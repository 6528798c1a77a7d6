"""`dualmode-rl verify`: score a JSONL file of completions with one reward spec."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from dualmode_rl.rewards.format import MODES
from dualmode_rl.rewards.jsonl import InputError, read_json_lines
from dualmode_rl.rewards.pool import ERROR_KEY, RewardPool, reward_metrics
from dualmode_rl.rewards.registry import load_reward
from dualmode_rl.rewards.types import RewardInput

_RESERVED = ("completion", "mode")


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) for every row, each checked for `completion` and `mode`."""
    rows = read_json_lines(path)
    for number, row in rows:
        if not isinstance(row.get("completion"), str):
            raise InputError(f"{path}: line {number}: missing string key 'completion'")
        if row.get("mode") not in MODES:
            raise InputError(f"{path}: line {number}: key 'mode' must be one of {MODES}, got {row.get('mode')!r}")
    return rows


def _plain(value):
    """A JSON-safe copy of an extra: non-finite floats become null, unknown objects their text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def verify_file(reward_spec: str, input_path, output_path, num_workers: int = 2, timeout_s: float = 30.0) -> dict:
    """Scores every row; writes each back with `score`, `error` (could not score), `reason` (why not full
    marks) and the reward's `extras`. Returns a summary with the per-reward metrics training logs."""
    input_path, output_path = Path(input_path), Path(output_path)
    rows = read_rows(input_path)
    reward = load_reward(reward_spec)
    pool = RewardPool([(reward, 1.0)], num_workers=num_workers, timeout_s=timeout_s)
    try:  # a row's `id` (naming it in errors) is its line number unless it has one
        outputs = pool.score([RewardInput(row["completion"], row["mode"],
                                          {"id": number, **{k: v for k, v in row.items() if k not in _RESERVED}})
                              for number, row in rows])
    finally:
        pool.close()
    prefix = f"{reward.name}/"
    output_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output_path.parent, prefix=f".{output_path.name}.")
    with os.fdopen(fd, "w") as f:
        for (_, row), out in zip(rows, outputs):
            extras = {k[len(prefix):]: _plain(v) for k, v in out.extras.items()
                      if k.startswith(prefix) and k != prefix + ERROR_KEY}
            f.write(json.dumps({**row, "score": out.score, "error": out.error, "reason": out.reason, "extras": extras},
                               allow_nan=False) + "\n")
    os.replace(tmp, output_path)
    scores = [o.score for o in outputs]
    return {"rows": len(rows), "mean_score": sum(scores) / len(scores), "errors": sum(o.error is not None for o in outputs),
            "output": str(output_path), "reward_errors": dict(pool.error_counts),
            "metrics": reward_metrics(outputs, [row["mode"] for _, row in rows])}
