"""`dualmode-rl report RUN_DIR`: a Markdown report to read instead of the logs.

From the run folder: every panel's curves from metrics.jsonl, each smoothed (TensorBoard's debiased
exponential moving average) next to its raw values; the last value of every metric; the evaluation
before and after training per mode when the folder (or its parent, as `dualmode-rl demo` lays it out)
has it; the sample completions per mode logged every train.log_samples_every steps; the filter's report.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from dualmode_rl.atomic import atomic_path, write_text_atomic  # noqa: E402
from dualmode_rl.rollout.types import MODES  # noqa: E402

from .metrics import METRICS_FILE, MODE_FIDELITY_KEYS, SAMPLES_FILE  # noqa: E402
from .train_eval import best_checkpoint  # noqa: E402

PANELS = [
    ("reward", [f"{m}/reward" for m in MODES]),
    ("accuracy", [f"{m}/accuracy" for m in MODES]),
    ("eval_accuracy", [f"eval/{m}/accuracy" for m in MODES]),  # train.eval_every: pass@1 on the test slice
    ("truncated", [f"{m}/truncated" for m in MODES]),
    ("overlong_penalty", [f"overlong/penalty/{m}" for m in MODES]),
    ("dynamic_sampling", [f"dynamic_sampling/{k}/{m}" for k in ("kept", "dropped") for m in MODES]
     + ["dynamic_sampling/rounds"]),
    ("response_length", [f"{m}/response_length" for m in MODES]),
    ("mode_fidelity", MODE_FIDELITY_KEYS),  # share of each mode's samples raising each flag
    ("loss", ["loss"]),
    ("entropy", ["entropy", *(f"entropy/{m}" for m in MODES)]),
    ("kl", ["kl", *(f"kl/{m}" for m in MODES)]),
    ("grad_norm", ["grad_norm"]),
    ("time_per_stage", ["time/rollout", "time/reward", "time/learner", "time/weight_sync", "time/reference",
                        "time/rollout_wait", "time/refill"]),
    ("rollout_staleness", ["rollout/staleness"]),
    ("sampler_learner_mismatch", [f"mismatch/logprob_abs/{m}" for m in MODES]),
    ("off_policy_ratio", [f"off_policy/ratio_{s}/{m}" for s in ("mean", "max") for m in MODES]),
    ("off_policy_capped_frac", [f"off_policy/capped_frac/{m}" for m in MODES]),
]
SMOOTHING = 0.6  # TensorBoard's default slider
EVAL_FILES = (("summary.json", None), ("eval_before.json", "before"), ("eval_after.json", "after"))
SAMPLE_CHARS = 400  # of a completion in the report's table (samples.jsonl keeps it whole)


def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average, debiased so the first points are not pulled to 0."""
    out, last, steps = [], 0.0, 0
    for value in values:
        steps += 1
        last = last * weight + (1 - weight) * value
        out.append(last / (1 - weight ** steps) if weight < 1 else value)
    return out


def _plot(rows: list[dict], keys: list[str], title: str, path: Path, weight: float) -> bool:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    drawn = False
    for key in keys:
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
        if points:
            steps, values = zip(*points)
            (line,) = ax.plot(steps, smoothed(list(values), weight), label=key)
            ax.plot(steps, values, color=line.get_color(), alpha=0.3, linewidth=0.8, marker=".", markersize=3)
            drawn = True
    ax.set_title(f"{title} (smoothed {weight:g}; faint: raw)")
    ax.set_xlabel("step")
    if drawn:
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return drawn


def write_report(run_dir: Path, smoothing: float = SMOOTHING) -> Path:
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        raise FileNotFoundError(f"{metrics}: no metrics; is {run_dir} a `dualmode-rl train` output folder?")
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    rows = _json_lines(metrics)
    plots = run_dir / "report_plots"
    plots.mkdir(exist_ok=True)
    lines = [f"# dualmode-rl run report: {run_dir}", "", f"{len(rows)} steps logged.", ""]
    if best := best_checkpoint(rows):
        modes = ", ".join(f"{m} {best[f'eval/{m}/accuracy']:.3f}" for m in MODES if f"eval/{m}/accuracy" in best)
        lines += [f"Best checkpoint (train.eval_every): `{best['checkpoint']}`, step {best['step']}, eval accuracy "
                  f"{best['eval/accuracy']:.3f} ({modes}).", ""]
    lines += _evaluation(run_dir)
    for name, keys in PANELS:
        if _plot(rows, keys, name, plots / f"{name}.png", smoothing):
            lines += [f"## {name}", "", f"![{name}](report_plots/{name}.png)", ""]
    lines += _samples(run_dir / SAMPLES_FILE)
    if rows:
        lines += ["## last values", "", "| metric | last value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in rows[-1].items() if isinstance(v, (int, float)) and k != "step"]
        lines.append("")
    lines += _filter(run_dir)
    return write_text_atomic(run_dir / "report.md", "\n".join(lines) + "\n")


def _json_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _evaluation(run_dir: Path) -> list[str]:
    """Accuracy per mode before and after training (`dualmode-rl eval --json` outputs, or the demo's summary)."""
    found: dict[str, dict] = {}
    for folder in (run_dir, run_dir.parent):
        for name, stage in EVAL_FILES:
            path = folder / name
            if path.is_file():
                data = json.loads(path.read_text())
                for key, report in ({stage: data} if stage else data).items():
                    found.setdefault(key, report)
    if not found:
        return []
    stages = [s for s in ("before", "after") if s in found]
    lines = ["## evaluation per mode", "", "| mode | " + " | ".join(f"accuracy {s}" for s in stages)
             + (" | change |" if len(stages) == 2 else " |"), "|---" * (len(stages) + 1 + (len(stages) == 2)) + "|"]
    for mode in MODES:
        values = [found[s].get(mode, {}).get("accuracy") for s in stages]
        cells = [f"{v:.3f}" if v is not None else "-" for v in values]
        if len(stages) == 2:
            cells.append(f"{values[1] - values[0]:+.3f}" if None not in values else "-")
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return lines + [""]


def _samples(path: Path) -> list[str]:
    """The logged sample completions, one table per mode."""
    if not path.is_file():
        return []
    rows = _json_lines(path)
    lines = ["## sample completions", ""]
    for mode in MODES:
        mine = [r for r in rows if r["mode"] == mode]
        if not mine:
            continue
        lines += [f"### {mode}", "", "| step | reward | prompt (end) | completion |", "|---|---|---|---|"]
        lines += [f"| {r['step']} | {r['reward']:.3g}{' (error)' if r.get('error') else ''} | "
                  f"{_cell(r['prompt'][-120:])} | {_cell(_clipped(r['completion']))} |" for r in mine]
        lines.append("")
    return lines


def _clipped(text: str) -> str:
    return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + " …"


def _cell(text: str) -> str:
    """Text inside a Markdown table cell: no pipes or raw newlines; chat tags such as <think> shown, not parsed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|").replace("\n", "<br>")


def _filter(run_dir: Path) -> list[str]:
    for filter_report in (run_dir / "filter" / "report.json", run_dir.parent / "filter" / "report.json"):
        if filter_report.is_file():
            data = json.loads(filter_report.read_text())
            lines = ["## accuracy filter", "", f"input {data['input']}, kept {data['kept']}, "
                     f"dropped (all correct) {data['dropped_all_correct']}" + _filter_mix(data), ""]
            return lines + [f"![{p.name}]({os.path.relpath(p, run_dir)})" for p in sorted(filter_report.parent.glob("*.png"))]
    return []


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
