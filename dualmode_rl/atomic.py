"""The one way files and folders are written: to a temporary name next to the target, fsynced, then
renamed over it, so a crash leaves the old version or the new one, never half of either."""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TMP_PREFIX = ".tmp."  # then the target's name, so its extension (what savefig reads) stays last


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path for `path`: write a file or a whole folder there; when the block ends without an
    error it is fsynced and renamed onto `path` (an existing folder is swapped out, then deleted).
    On an error it is removed and `path` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(TMP_PREFIX + path.name)
    _remove(tmp)  # left by a writer that was killed
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.is_dir() and not path.is_symlink():
            old = path.with_name(f"{TMP_PREFIX}old.{path.name}")
            _remove(old)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        _remove(tmp)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | Path, payload) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """Every file and folder under `path` (or the file `path`) on disk before the rename makes it visible."""
    if path.is_dir():
        for folder, _, files in os.walk(path):
            for name in files:
                _fsync(Path(folder, name))
            _fsync(Path(folder))
    else:
        _fsync(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
