"""JSON-lines input files: every problem named by file and line, numbered from 1."""
from __future__ import annotations

import json
from pathlib import Path


class InputError(ValueError):
    """An input file is unreadable, empty or has a bad row; the message names the file and line."""


def read_json_lines(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; an empty file or a line that is not a JSON object is an InputError."""
    path = Path(path)
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: line {number}: not valid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}: line {number}: expected a JSON object, got {type(row).__name__}")
            rows.append((number, row))
    if not rows:
        raise InputError(f"{path}: no rows: the file is empty" if path.stat().st_size == 0 else
                         f"{path}: no rows: only blank lines")
    return rows
