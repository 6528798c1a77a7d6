"""Checkpoint writes are atomic: a write that dies part-way leaves the latest checkpoint intact.

The learner here is a stand-in that writes files like the real one (the real one is exercised by
the kill-and-resume test in test_train_loop.py); what is under test is save_checkpoint's ordering."""
import json
from pathlib import Path

import pytest

from dualmode_rl.orchestration.checkpoint import LoopState, latest_checkpoint, load_loop_state, save_checkpoint


class FileLearner:
    def __init__(self, tag: str, die_in_training_state: bool = False):
        self.tag, self.die = tag, die_in_training_state

    def save(self, checkpoint: Path) -> None:
        (checkpoint / "policy").mkdir(parents=True, exist_ok=True)
        (checkpoint / "policy" / "model.safetensors").write_text(self.tag)
        (checkpoint / "trainer").mkdir(parents=True, exist_ok=True)
        (checkpoint / "trainer" / "learner_state.pt").write_text(self.tag[: len(self.tag) // 2])
        if self.die:
            raise KeyboardInterrupt("killed while writing the checkpoint")
        (checkpoint / "trainer" / "learner_state.pt").write_text(self.tag)


class Tokenizer:
    def save_pretrained(self, path: Path) -> None:
        (path / "tokenizer_config.json").write_text("{}")


def test_a_checkpoint_write_that_dies_part_way_leaves_the_latest_intact(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 1}) + "\n")
    save_checkpoint(tmp_path, LoopState(1, {"position": 4}), FileLearner("one"), Tokenizer(), metrics)
    metrics.write_text(metrics.read_text() + json.dumps({"step": 2}) + "\n")
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, LoopState(2, {"position": 8}), FileLearner("two", True), Tokenizer(), metrics)

    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step_000001" and load_loop_state(latest) == LoopState(1, {"position": 4})
    assert (latest / "policy" / "model.safetensors").read_text() == "one"
    assert (latest / "trainer" / "learner_state.pt").read_text() == "one"
    assert not (tmp_path / "checkpoints" / "step_000002").exists()  # the partial write is not a checkpoint

    again = save_checkpoint(tmp_path, LoopState(2, {"position": 8}), FileLearner("two"), Tokenizer(), metrics)
    assert latest_checkpoint(tmp_path) == again and (again / "trainer" / "learner_state.pt").read_text() == "two"
    assert len((again / "metrics.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_000001", "step_000002"]
