"""Run checkpoints: policy (HF safetensors), optimizer/scheduler/RNG state, data position, metrics.

Each checkpoint is written to a temporary folder and renamed; `latest` is a file naming the newest
complete checkpoint, itself replaced atomically, so a crash never leaves a broken latest.
"""
from __future__ import annotations

import json
import shutil
import struct
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .atomic import write_text_atomic

STATE_FILE = "loop_state.json"
LATEST = "latest"


class CheckpointError(ValueError):
    """A model or checkpoint folder is missing or not loadable; the message names it."""


def check_model_folder(path: str | Path) -> Path:
    """The folder's files: config, complete weights, tokenizer. (Its chat template: orchestration.preflight.)"""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: model folder does not exist (run `dualmode-rl bootstrap` or pass --model DIR)")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not a loadable model: no config.json")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise CheckpointError(f"{path}: not a loadable model: no weight files (*.safetensors)")
    if not (path / "tokenizer_config.json").is_file():
        raise CheckpointError(f"{path}: not a loadable model: no tokenizer (tokenizer_config.json)")
    for weights in sorted(path.glob("*.safetensors")):
        if problem := safetensors_problem(weights):
            raise CheckpointError(f"{weights}: not a loadable model: {problem}")
    return path


def safetensors_problem(path: Path) -> str | None:
    """Why a .safetensors file is unusable (truncated, bad header), or None; reads only its header."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            return f"truncated: {size} bytes, not even a header"
        header_size = struct.unpack("<Q", raw)[0]
        if 8 + header_size > size:
            return f"truncated: {size} bytes, its header alone needs {8 + header_size}"
        try:
            header = json.loads(f.read(header_size))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return f"corrupt header ({exc})"
    ends = [t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"]
    expected = 8 + header_size + max(ends, default=0)
    if size != expected:
        return f"truncated: {size} bytes, its header describes {expected}"
    return None


def torch_file_problem(path: Path) -> str | None:
    """Why a torch.save file is unusable, or None: its zip directory, at the end of the file, must be readable."""
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"truncated or corrupt ({exc})"
    return None


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
    learner.save_pretrained(tmp / "policy")
    tokenizer.save_pretrained(tmp / "policy")
    learner.save_training_state(tmp / "trainer")
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


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Which file of a checkpoint is missing or corrupt, and why; None when all are whole."""
    try:
        json.loads((checkpoint / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return f"{checkpoint / STATE_FILE}: unreadable ({exc})"
    try:
        check_model_folder(checkpoint / "policy")
    except CheckpointError as exc:
        return str(exc)
    trainer = checkpoint / "trainer"
    files = sorted(trainer.glob("*.pt")) if trainer.is_dir() else []
    if not files:
        return f"{trainer}: no training state (*.pt)"
    for path in files:
        if problem := torch_file_problem(path):
            return f"{path}: {problem}"
    return None


def verify_checkpoint(run_dir: Path, checkpoint: Path) -> None:
    """A CheckpointError naming the corrupt file, and the newest earlier checkpoint that is whole."""
    problem = checkpoint_problem(checkpoint)
    if problem is None:
        return
    earlier = sorted((p for p in (run_dir / "checkpoints").glob("step_*") if p.name < checkpoint.name), reverse=True)
    intact = next((p for p in earlier if checkpoint_problem(p) is None), None)
    offer = (f"the previous checkpoint {intact.name} is whole: resume from it with `echo {intact.name} > "
             f"{run_dir / 'checkpoints' / LATEST}` and --resume" if intact else
             "no earlier checkpoint is whole: start afresh without --resume in an empty train.out")
    raise CheckpointError(f"checkpoint {checkpoint.name} is corrupt: {problem}; {offer}")


def load_loop_state(checkpoint: Path) -> LoopState:
    return LoopState(**json.loads((checkpoint / STATE_FILE).read_text()))
