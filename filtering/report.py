"""The filter's report: pass-count histograms per mode and per (mode, domain), report.json and PNG plots."""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .journal import PromptRecord, write_atomic

REPORT_FILE = "report.json"
ERROR_KIND_CHARS, ERROR_KINDS = 80, 20


@dataclass
class FilterReport:
    input: int
    kept: int
    dropped_all_correct: int
    histogram: dict[str, dict[str, int]]  # mode -> pass count -> prompts, over ALL input prompts
    by_mode_domain: dict[str, dict[str, dict]]  # mode -> domain -> {input, kept, dropped_all_correct, histogram, ...}
    samples_per_prompt: int
    correct_threshold: float
    sample_accuracy: float  # share of correct samples over all samples
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

    def to_dict(self) -> dict:
        return asdict(self)


class PassCountTally:
    """Counts streamed prompt records into the histograms and totals of the report."""

    def __init__(self, samples: int, threshold: float):
        self.samples, self.threshold = samples, threshold
        self.cells: dict[tuple[str, str], Counter] = {}
        self.correct = self.total = self.truncated = self.errors = 0
        self.error_kinds: Counter = Counter()

    def add(self, record: PromptRecord) -> int:
        passed = record.pass_count(self.threshold)
        self.cells.setdefault((record.mode, record.domain), Counter())[passed] += 1
        self.correct += passed
        self.total += len(record.samples)
        self.truncated += sum(s.finish_reason == "length" for s in record.samples)
        self.errors += sum(s.error is not None for s in record.samples)
        self.error_kinds.update(s.error[:ERROR_KIND_CHARS] for s in record.samples if s.error is not None)
        return passed

    def top_errors(self) -> dict[str, int]:
        return dict(self.error_kinds.most_common(ERROR_KINDS))

    def histogram(self, counts: Counter) -> dict[str, int]:
        keys = range(max([self.samples, *counts]) + 1)
        return {str(k): counts.get(k, 0) for k in keys}

    def by_mode(self) -> dict[str, dict[str, int]]:
        merged: dict[str, Counter] = {}
        for (mode, _), counts in sorted(self.cells.items()):
            merged.setdefault(mode, Counter()).update(counts)
        return {mode: self.histogram(counts) for mode, counts in merged.items()}

    def by_mode_domain(self) -> dict[str, dict[str, dict]]:
        out: dict[str, dict[str, dict]] = {}
        for (mode, domain), counts in sorted(self.cells.items()):
            prompts = sum(counts.values())
            dropped = counts.get(self.samples, 0)
            out.setdefault(mode, {})[domain] = {
                "input": prompts,
                "kept": prompts - dropped,
                "dropped_all_correct": dropped,
                "mean_pass_rate": sum(k * v for k, v in counts.items()) / max(1, prompts * self.samples),
                "histogram": self.histogram(counts),
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
    """One bar chart per (mode, domain): prompts per pass count, the dropped all-correct bar marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = []
    for mode, domains in by_mode_domain.items():
        for domain, cell in domains.items():
            counts = cell["histogram"]
            keys = [int(k) for k in counts]
            figure = Figure(figsize=(5, 3.2))
            FigureCanvasAgg(figure)
            figure.subplots_adjust(left=0.13, right=0.97, bottom=0.16, top=0.9)
            axes = figure.add_subplot()
            colors = ["tab:red" if k == samples else "tab:blue" for k in keys]
            axes.bar(keys, [counts[str(k)] for k in keys], color=colors)
            axes.set_xticks(keys)
            axes.set_xlabel(f"correct samples out of {samples} (red: dropped)")
            axes.set_ylabel("prompts")
            axes.set_title(f"{mode} / {domain}: {cell['input']} prompts, {cell['kept']} kept")
            name = f"histogram-{_safe(mode)}-{_safe(domain)}.png"
            tmp = out_dir / f".{name}.tmp.png"
            figure.savefig(tmp, dpi=80)
            tmp.replace(out_dir / name)
            names.append(name)
    return names


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"
