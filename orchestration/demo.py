"""`dualmode-rl demo` (`make demo`): bootstrap (reused while its settings hold) -> eval -> filter -> train -> eval, with a summary."""
from __future__ import annotations

import logging
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from dualmode_rl.atomic import write_json_atomic
from .bootstrap import bootstrap, is_bootstrapped
from .checkpoint import latest_checkpoint
from .config import DualModeConfig
from .evaluate import format_table, run_eval
from .loop import train
from .prefilter import run_filter_command

log = logging.getLogger(__name__)


@contextmanager
def _timed(seconds: dict, stage: str):
    started = time.monotonic()
    yield
    seconds[stage] = round(time.monotonic() - started, 1)
    log.info("demo stage %s took %.1f s", stage, seconds[stage])


def _leave_ray() -> None:
    """The evaluation after training needs no Ray. A local cluster left running can only fail it: on the
    loaded 2-core box its raylet once missed its heartbeats right after training, and a minute later the
    driver aborted mid-eval, unable to reach the GCS."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def run_demo(cfg: DualModeConfig, root: Path) -> dict:
    seconds: dict[str, float] = {}
    if cfg.model is None and not is_bootstrapped(cfg.bootstrap.out, cfg.bootstrap):
        with _timed(seconds, "bootstrap"):
            bootstrap(cfg.bootstrap)
    root.mkdir(parents=True, exist_ok=True)
    with _timed(seconds, "eval_before"):
        before = run_eval(cfg)
    write_json_atomic(root / "eval_before.json", before)
    print("before RL\n" + format_table(before), flush=True)

    with _timed(seconds, "filter"):
        filter_report = run_filter_command(cfg, out=str(root / "filter"))
    log.info("filter kept %d of %d prompts", filter_report["kept"], filter_report["input"])

    cfg.data.train = str(root / "filter")
    cfg.train.out = str(root / "train")
    shutil.rmtree(cfg.train.out, ignore_errors=True)  # the demo always trains afresh
    with _timed(seconds, "train"):
        train(cfg)
    _leave_ray()

    trained = cfg.model_copy(update={"model": str(latest_checkpoint(Path(cfg.train.out)) / "policy")})
    with _timed(seconds, "eval_after"):
        after = run_eval(trained)
    summary = {"before": before, "after": after, "seconds": seconds}
    write_json_atomic(root / "summary.json", summary)
    print("before RL\n" + format_table(before) + "\n\nafter RL\n" + format_table(after), flush=True)
    return summary
