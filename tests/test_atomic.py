"""The one atomic write (dualmode_rl/atomic.py): the old version survives a failed write, folders are
swapped whole, and the data and the rename are fsynced before the write returns."""
import os

import pytest

from dualmode_rl import atomic
from dualmode_rl.atomic import TMP_PREFIX, atomic_path, write_text_atomic


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_folder_is_replaced_whole_and_a_killed_writers_leftover_is_cleared(tmp_path):
    target = tmp_path / "step_000001"
    (tmp_path / (TMP_PREFIX + target.name)).mkdir()  # a writer killed before its rename
    for version in ("one", "two"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / version).write_text(version)
    assert [p.name for p in target.iterdir()] == ["two"]
    assert [p.name for p in tmp_path.iterdir()] == ["step_000001"]


def test_the_data_and_the_rename_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    with atomic_path(tmp_path / "out" / "policy") as tmp:
        tmp.mkdir()
        (tmp / "model.safetensors").write_text("w")
    assert str(tmp_path / "out" / (TMP_PREFIX + "policy") / "model.safetensors") in synced  # before the rename
    assert synced[-1] == str(tmp_path / "out")  # the folder holding the new name, after it
