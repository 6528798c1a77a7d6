"""`dualmode-rl verify`: score a JSONL file of completions with one reward spec."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from dualmode_rl.rewards.format import MODES
from dualmode_rl.rewards.pool import RewardPool
from dualmode_rl.rewards.registry import load_reward
from dualmode_rl.rewards.types import RewardInput

_RESERVED = ("completion", "mode")


def read_rows(path: Path) -> list[dict]:
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: row {number}: not JSON ({exc})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}: row {number}: expected an object")
            if not isinstance(row.get("completion"), str):
                raise ValueError(f"{path}: row {number}: missing string key 'completion'")
            if row.get("mode") not in MODES:
                raise ValueError(f"{path}: row {number}: key 'mode' must be one of {MODES}, got {row.get('mode')!r}")
            rows.append(row)
    return rows


def verify_file(reward_spec: str, input_path, output_path, num_workers: int = 2, timeout_s: float = 30.0) -> dict:
    input_path, output_path = Path(input_path), Path(output_path)
    rows = read_rows(input_path)
    pool = RewardPool([(load_reward(reward_spec), 1.0)], num_workers=num_workers, timeout_s=timeout_s)
    try:
        inputs = [RewardInput(row["completion"], row["mode"], {k: v for k, v in row.items() if k not in _RESERVED})
                  for row in rows]
        outputs = pool.score(inputs)
    finally:
        pool.close()
    output_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output_path.parent, prefix=f".{output_path.name}.")
    with os.fdopen(fd, "w") as f:
        for row, out in zip(rows, outputs):
            f.write(json.dumps({**row, "score": out.score, "error": out.error}) + "\n")
    os.replace(tmp, output_path)
    scores = [o.score for o in outputs]
    return {"rows": len(rows), "mean_score": sum(scores) / len(scores) if scores else 0.0,
            "errors": sum(o.error is not None for o in outputs), "output": str(output_path),
            "reward_errors": dict(pool.error_counts)}
