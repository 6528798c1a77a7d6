"""`dualmode-rl report RUN_DIR`: a Markdown report with plots from a run's metrics.jsonl (and the filter's report)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dualmode_rl.rollout.types import MODES  # noqa: E402

from .atomic import write_text_atomic  # noqa: E402
from .metrics import METRICS_FILE, MODE_FIDELITY_KEYS  # noqa: E402
from .train_eval import best_checkpoint  # noqa: E402

PANELS = [
    ("reward", ["reasoning/reward", "non_reasoning/reward"]),
    ("accuracy", ["reasoning/accuracy", "non_reasoning/accuracy"]),
    ("eval_accuracy", [f"eval/{m}/accuracy" for m in MODES]),  # train.eval_every: pass@1 on the test slice
    ("truncated", [f"{m}/truncated" for m in MODES]),
    ("overlong_penalty", [f"overlong/penalty/{m}" for m in MODES]),
    ("dynamic_sampling", [f"dynamic_sampling/{k}/{m}" for k in ("kept", "dropped") for m in MODES]
     + ["dynamic_sampling/rounds"]),
    ("response_length", ["reasoning/response_length", "non_reasoning/response_length"]),
    ("mode_fidelity", MODE_FIDELITY_KEYS),  # share of each mode's samples raising each flag
    ("kl", ["kl", "kl/reasoning", "kl/non_reasoning"]),
    ("time_per_stage", ["time/rollout", "time/reward", "time/learner", "time/weight_sync", "time/reference",
                        "time/rollout_wait", "time/refill"]),
    ("rollout_staleness", ["rollout/staleness"]),
    ("sampler_learner_mismatch", ["mismatch/logprob_abs/reasoning", "mismatch/logprob_abs/non_reasoning"]),
    ("off_policy_ratio", [f"off_policy/ratio_{s}/{m}" for s in ("mean", "max") for m in ("reasoning", "non_reasoning")]),
    ("off_policy_capped_frac", ["off_policy/capped_frac/reasoning", "off_policy/capped_frac/non_reasoning"]),
]


def _plot(rows: list[dict], keys: list[str], title: str, path: Path) -> bool:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    drawn = False
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
            ax.plot(*zip(*points), marker=".", label=key)
            drawn = True
    ax.set_title(title)
    ax.set_xlabel("step")
    if drawn:
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
    plt.close(fig)
    return drawn


def write_report(run_dir: Path) -> Path:
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics}: no metrics; is {run_dir} a `dualmode-rl train` output folder?")
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    plots = run_dir / "report_plots"
    plots.mkdir(exist_ok=True)
    lines = [f"# dualmode-rl run report: {run_dir}", "", f"{len(rows)} steps logged.", ""]
    if best := best_checkpoint(rows):
        modes = ", ".join(f"{m} {best[f'eval/{m}/accuracy']:.3f}" for m in MODES if f"eval/{m}/accuracy" in best)
        lines += [f"Best checkpoint (train.eval_every): `{best['checkpoint']}`, step {best['step']}, eval accuracy "
                  f"{best['eval/accuracy']:.3f} ({modes}).", ""]
    if rows:
        last = rows[-1]
        lines += ["| metric | last value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in last.items() if isinstance(v, (int, float)) and k != "step"]
        lines.append("")
    for name, keys in PANELS:
        if _plot(rows, keys, name, plots / f"{name}.png"):
            lines += [f"## {name}", "", f"![{name}](report_plots/{name}.png)", ""]
    for filter_report in (run_dir / "filter" / "report.json", run_dir.parent / "filter" / "report.json"):
        if filter_report.is_file():
            data = json.loads(filter_report.read_text())
            lines += ["## accuracy filter", "", f"input {data['input']}, kept {data['kept']}, "
                      f"dropped (all correct) {data['dropped_all_correct']}" + _filter_mix(data), ""]
            lines += [f"![{p.name}]({p.relative_to(run_dir.parent) if run_dir.parent in p.parents else p})"
                      for p in sorted(filter_report.parent.glob("*.png"))]
            break
    return write_text_atomic(run_dir / "report.md", "\n".join(lines) + "\n")


def _filter_mix(data: dict) -> str:
    """The kept share per mode, with joint sampling and rebalancing when used (older reports lack them)."""
    shares = ", ".join(f"{mode} {share:.3f}" for mode, share in data.get("kept_share", {}).items())
    text = f"; kept share: {shares}" if shares else ""
    if data.get("joint"):
        text += f"; joint sampling kept {data['kept_by_joint']} prompts all right in their own mode"
    if data.get("rebalance_share") is not None:
        text += (f"; rebalanced to a reasoning share of {data['rebalance_share']:.3f}, "
                 f"dropping {data['dropped_rebalance']}")
    return text
