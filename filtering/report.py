"""The filter's report: pass-count histograms per mode and per (mode, domain), the mode mix before and after
filtering and rebalancing, report.json and PNG plots."""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dualmode_rl.rollout.types import REASONING

from .journal import PromptRecord, write_atomic

REPORT_FILE, MIX_PLOT = "report.json", "mix.png"
ERROR_KIND_CHARS, ERROR_KINDS = 80, 20


@dataclass
class FilterReport:
    input: int
    kept: int  # rows in the saved dataset: input = kept + dropped_all_correct + dropped_rebalance
    dropped_all_correct: int  # every sample right (with joint: in both modes)
    histogram: dict[str, dict[str, int]]  # mode -> pass count -> prompts, over ALL input prompts
    # mode -> domain -> {input, kept, dropped_all_correct, kept_by_joint, dropped_rebalance, kept_share,
    # mean_pass_rate, histogram}; kept_share: the cell's share of the saved dataset
    by_mode_domain: dict[str, dict[str, dict]]
    samples_per_prompt: int
    correct_threshold: float
    sample_accuracy: float  # share of correct samples over all samples (with joint: both modes)
    truncated_samples: int  # samples that hit max_tokens
    reward_errors: int  # samples whose reward reported an error (scored 0)
    reward_error_kinds: dict[str, int]  # the most frequent error messages (a bad reference column shows here)
    generated_prompts: int  # prompts sampled by this invocation
    resumed_prompts: int  # prompts taken from the journal of an earlier invocation
    generation_seconds: float  # time inside generator.generate, this invocation
    scoring_seconds: float  # time inside reward_pool.score, this invocation (overlapped with generation)
    wall_seconds: float  # whole run_filter call, this invocation
    setup_seconds: float  # checking and fingerprinting the dataset, opening the journal
    finish_seconds: float  # reading the journal back, saving the dataset, plots, report
    journal_generation_seconds: float  # generation time summed over every journaled chunk, all invocations
    dataset_dir: str
    journal_dir: str
    plots: list[str] = field(default_factory=list)
    joint: bool = False  # each prompt sampled in both modes, dropped only when all right in both
    kept_by_joint: int = 0  # all right in the row's mode, kept because the other mode was not
    rebalance_share: float | None = None  # the reasoning share the kept set was rebalanced to; None: not rebalanced
    dropped_rebalance: int = 0  # passed the filter, dropped to reach rebalance_share
    # mode -> share of the prompts: in the input, after the drop rule, and in the saved dataset
    input_share: dict[str, float] = field(default_factory=dict)
    filtered_share: dict[str, float] = field(default_factory=dict)
    kept_share: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TallyCell:
    """One (mode, domain): pass counts of its prompts and what became of them."""

    mode: str
    domain: str
    histogram: Counter = field(default_factory=Counter)  # pass count in the row's mode -> prompts
    passed: int = 0  # kept by the drop rule
    kept_by_joint: int = 0
    dropped_rebalance: int = 0

    @property
    def kept(self) -> int:
        return self.passed - self.dropped_rebalance


class PassCountTally:
    """Counts streamed prompt records and the filter's decisions into the histograms and totals of the report."""

    def __init__(self, samples: int, threshold: float):
        self.samples, self.threshold = samples, threshold
        self.cells: dict[tuple[str, str], TallyCell] = {}
        self.correct = self.total = self.truncated = self.errors = 0
        self.error_kinds: Counter = Counter()

    def add(self, record: PromptRecord, kept: bool) -> TallyCell:
        """Count `record`, kept or dropped by the drop rule; returns its cell (for rebalancing)."""
        cell = self.cells.setdefault((record.mode, record.domain), TallyCell(record.mode, record.domain))
        passed = record.pass_count(self.threshold)
        cell.histogram[passed] += 1
        cell.passed += kept
        cell.kept_by_joint += kept and passed == len(record.samples)
        every = record.samples + record.cross_samples
        self.correct += sum(s.score >= self.threshold for s in every)
        self.total += len(every)
        self.truncated += sum(s.finish_reason == "length" for s in every)
        self.errors += sum(s.error is not None for s in every)
        self.error_kinds.update(s.error[:ERROR_KIND_CHARS] for s in every if s.error is not None)
        return cell

    def top_errors(self) -> dict[str, int]:
        return dict(self.error_kinds.most_common(ERROR_KINDS))

    def histogram(self, counts: Counter) -> dict[str, int]:
        keys = range(max([self.samples, *counts]) + 1)
        return {str(k): counts.get(k, 0) for k in keys}

    def by_mode(self) -> dict[str, dict[str, int]]:
        merged: dict[str, Counter] = {}
        for (mode, _), cell in sorted(self.cells.items()):
            merged.setdefault(mode, Counter()).update(cell.histogram)
        return {mode: self.histogram(counts) for mode, counts in merged.items()}

    def mode_shares(self, count) -> dict[str, float]:
        """mode -> share of `count(cell)` summed over the mode's cells."""
        per_mode: Counter = Counter()
        for (mode, _), cell in sorted(self.cells.items()):
            per_mode[mode] += count(cell)
        total = sum(per_mode.values())
        return {mode: n / total if total else 0.0 for mode, n in per_mode.items()}

    def by_mode_domain(self) -> dict[str, dict[str, dict]]:
        out: dict[str, dict[str, dict]] = {}
        kept_total = sum(cell.kept for cell in self.cells.values())
        for (mode, domain), cell in sorted(self.cells.items()):
            prompts = sum(cell.histogram.values())
            out.setdefault(mode, {})[domain] = {
                "input": prompts,
                "kept": cell.kept,
                "dropped_all_correct": prompts - cell.passed,
                "kept_by_joint": cell.kept_by_joint,
                "dropped_rebalance": cell.dropped_rebalance,
                "kept_share": cell.kept / kept_total if kept_total else 0.0,
                "mean_pass_rate": sum(k * v for k, v in cell.histogram.items()) / max(1, prompts * self.samples),
                "histogram": self.histogram(cell.histogram),
            }
        return out


def write_report(report: FilterReport, out_dir: Path) -> Path:
    path = out_dir / REPORT_FILE
    write_atomic(path, json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def load_plotting() -> None:
    """Import matplotlib (about a second); run_filter does it in the background while generation runs."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    from matplotlib.figure import Figure  # noqa: F401


def plot_histograms(by_mode_domain: dict[str, dict[str, dict]], samples: int, out_dir: Path) -> list[str]:
    """One bar chart per (mode, domain): prompts per pass count; the all-correct bar split into dropped
    (red) and kept because the other mode was not all correct (orange, filter.joint)."""
    names = []
    for mode, domains in by_mode_domain.items():
        for domain, cell in domains.items():
            counts = cell["histogram"]
            keys = [int(k) for k in counts]
            figure, axes = _figure()
            heights = [cell["dropped_all_correct"] if k == samples else counts[str(k)] for k in keys]
            axes.bar(keys, heights, color=["tab:red" if k == samples else "tab:blue" for k in keys])
            if cell["kept_by_joint"]:
                axes.bar([samples], [cell["kept_by_joint"]], bottom=[cell["dropped_all_correct"]], color="tab:orange",
                         label="kept: other mode not all correct")
                axes.legend(fontsize=7)
            axes.set_xticks(keys)
            axes.set_xlabel(f"correct samples out of {samples} (red: dropped)")
            axes.set_ylabel("prompts")
            rebalanced = f", {cell['dropped_rebalance']} rebalanced out" if cell["dropped_rebalance"] else ""
            axes.set_title(f"{mode} / {domain}: {cell['input']} prompts, {cell['kept']} kept{rebalanced}", fontsize=9)
            names.append(_save(figure, out_dir, f"histogram-{_safe(mode)}-{_safe(domain)}.png"))
    return names


def plot_mix(report: FilterReport, out_dir: Path) -> str:
    """Each mode's share of the prompts: in the input, after the drop rule, and saved after rebalancing
    (with the target share marked)."""
    stages = [("input", report.input_share), ("after the filter", report.filtered_share)]
    if report.rebalance_share is not None:
        stages.append(("after rebalancing", report.kept_share))
    modes = sorted(report.input_share)
    figure, axes = _figure()
    width = 0.8 / len(stages)
    for j, (label, shares) in enumerate(stages):
        axes.bar([i + j * width for i in range(len(modes))], [shares.get(m, 0.0) for m in modes], width, label=label)
    if report.rebalance_share is not None:
        for i, mode in enumerate(modes):
            target = report.rebalance_share if mode == REASONING else 1 - report.rebalance_share
            axes.hlines(target, i - width / 2, i + 0.8 - width / 2, colors="black", linestyles="dashed",
                        label="target" if i == 0 else None)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(modes))], modes)
    axes.set_ylim(0, 1)
    axes.set_ylabel("share of prompts")
    axes.legend(fontsize=7, loc="upper left")
    joint = ", joint sampling" if report.joint else ""
    axes.set_title(f"mode mix: {report.input} prompts in, {report.kept} kept{joint}", fontsize=9)
    return _save(figure, out_dir, MIX_PLOT)


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.2))
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=0.13, right=0.97, bottom=0.16, top=0.9)
    return figure, figure.add_subplot()


def _save(figure, out_dir: Path, name: str) -> str:
    tmp = out_dir / f".{name}.tmp.png"
    figure.savefig(tmp, dpi=80)
    tmp.replace(out_dir / name)
    return name


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"
