"""TensorBoard events read back raw from a run's event files, with no TensorBoard-side purging of steps."""
from __future__ import annotations

from pathlib import Path


def scalar_events(folder: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of every event of `tag` in every event file under `folder`, in file order."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    return [(event.step, value.tensor.float_val[0] if value.tensor.float_val else value.simple_value)
            for path in sorted(folder.iterdir())
            for event in EventFileLoader(str(path)).Load() for value in event.summary.value if value.tag == tag]
