"""Run checkpoints: policy (HF safetensors), optimizer/scheduler/RNG state, data position, metrics.

Each checkpoint is written to a temporary folder and renamed; `latest` is a file naming the newest
complete checkpoint, itself replaced atomically, so a crash never leaves a broken latest.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .atomic import write_text_atomic

STATE_FILE = "loop_state.json"
LATEST = "latest"


class CheckpointError(ValueError):
    """A model or checkpoint folder is missing or not loadable; the message names it."""


def check_model_folder(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: model folder does not exist (run `dualmode-rl bootstrap` or pass --model DIR)")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not a loadable model: no config.json")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise CheckpointError(f"{path}: not a loadable model: no weight files (*.safetensors)")
    if not (path / "tokenizer_config.json").is_file():
        raise CheckpointError(f"{path}: not a loadable model: no tokenizer (tokenizer_config.json)")
    return path


@dataclass
class LoopState:
    step: int = 0
    sampler: dict = field(default_factory=dict)
    rng: dict = field(default_factory=dict)


def save_checkpoint(run_dir: Path, state: LoopState, learner, tokenizer, metrics_file: Path) -> Path:
    root = run_dir / "checkpoints"
    final = root / f"step_{state.step:06d}"
    tmp = root / f".tmp_step_{state.step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    learner.save(tmp)  # policy/ and trainer/
    tokenizer.save_pretrained(tmp / "policy")
    if metrics_file.exists():
        shutil.copy2(metrics_file, tmp / metrics_file.name)
    (tmp / STATE_FILE).write_text(json.dumps(asdict(state)))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    write_text_atomic(root / LATEST, final.name)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"{pointer}: names {path.name}, which is incomplete")
    return path


def load_loop_state(checkpoint: Path) -> LoopState:
    return LoopState(**json.loads((checkpoint / STATE_FILE).read_text()))
