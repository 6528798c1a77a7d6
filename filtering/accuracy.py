"""Accuracy pre-filter: sample each prompt G' times, score, drop the prompts the model always solves.

Chunks of prompts flow through two stages: the generator samples chunk i+1 while a scoring thread
scores chunk i with the reward pool and journals it (filtering.journal). When every chunk is
journaled, the journal is read back (streamed) and decided (filtering.decide) into the kept dataset,
report.json and the plots. An interrupted run, rerun on the same inputs and output folder, skips the
journaled chunks.

Mix control: with `joint`, each prompt is also sampled in its other mode and dropped only when every
sample is right in both; the kept row keeps its own mode. With `rebalance`, the kept set is then cut
to a reasoning share (filtering.decide.rebalance), as the drop rule removes more of the easier mode.
"""
from __future__ import annotations

import inspect
import logging
import shutil
import threading
import time
from array import array
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from datasets import Dataset
from tqdm.auto import tqdm

from dualmode_rl.rewards.types import RewardInput, RewardOutput
from dualmode_rl.rollout.types import REASONING, GenerationRequest, RolloutGroup

from .decide import keeps, rebalance
from .journal import ChunkHeader, ChunkJournal, PromptRecord, SampleRecord
from .report import FilterReport, PassCountTally, TallyCell, load_plotting, plot_histograms, plot_mix, write_report
from .rows import dataset_source, other_mode, read_rows, request_for, reward_inputs, scan_rows

log = logging.getLogger(__name__)
DATASET_DIR = "data"  # where orchestration.data.load_split looks inside a folder
PASS_COUNT, SAMPLE_COUNT = "pass_count", "sample_count"
DEFAULT_THRESHOLD = 1.0 - 1e-9
INPUT_SHARE = "input"  # rebalance_to: the input dataset's own reasoning share


class Generator(Protocol):
    """A rollout engine or pool: `request.n` samples per request, groups in request order. A `seed`
    keyword, when `generate` takes one, resets the sampler first (rollout's engines and pool do)."""

    def generate(self, requests: list[GenerationRequest]) -> list[RolloutGroup]: ...


class Scorer(Protocol):
    """A reward pool: one combined RewardOutput per input, in order."""

    def score(self, inputs: list[RewardInput]) -> list[RewardOutput]: ...


class FilterGeneratorError(RuntimeError):
    """The generator returned groups that do not match the requests."""


@dataclass
class _Chunk:
    index: int
    start: int
    stop: int


class _Clock:
    def __init__(self):
        self.generation = self.scoring = 0.0
        self.generated = 0
        self.setup = 0.0
        self.lock = threading.Lock()


def run_filter(
    generator: Generator,
    reward_pool: Scorer,
    dataset: Dataset,
    out_dir: str | Path,
    samples: int = 8,
    chunk_size: int = 64,
    correct_threshold: float = DEFAULT_THRESHOLD,
    source: str | None = None,
    run_key: dict | None = None,
    progress: bool = True,
    seed: int | None = 0,
    joint: bool = False,
    rebalance_to: float | Literal["input"] | None = None,
) -> FilterReport:
    """Filter `dataset` into `out_dir` (data/, report.json, histogram-*.png, journal/); see module doc.

    `source` names the dataset in error messages (default: its backing file). `run_key` is what else
    identifies the run for resuming (model, sampling, reward specs): a journal made under another key,
    or from another dataset / `samples` / `chunk_size`, is refused. `correct_threshold` only decides,
    so it may change between reruns without new sampling. With a `seed` and a generator whose
    `generate` takes one, chunk i is sampled with seed + i: an interrupted and resumed run samples
    exactly what an uninterrupted one does (same weights, same chunks).

    `joint` samples every prompt in both modes (a journal made otherwise is refused). `rebalance_to`, a
    reasoning share or "input" (the input's own share), cuts the kept set to it, choosing with `seed`
    (0 when None); like the threshold it only decides, so it may change between reruns.
    """
    if samples < 1 or chunk_size < 1:
        raise ValueError(f"samples and chunk_size must be >= 1, got {samples} and {chunk_size}")
    began = time.monotonic()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = source or dataset_source(dataset)
    journal = ChunkJournal(out)
    journal.open({"dataset": scan_rows(dataset, source), "rows": len(dataset), "samples": samples,
                  "chunk_size": chunk_size, "seed": seed, "run_key": run_key,
                  **({"joint": True} if joint else {})})  # absent when false: earlier journals stay valid
    chunks = [_Chunk(i, a, min(a + chunk_size, len(dataset))) for i, a in enumerate(range(0, len(dataset), chunk_size))]
    todo = [c for c in chunks if not journal.has(c.index)]
    clock = _Clock()
    clock.setup = time.monotonic() - began
    with tqdm(total=len(dataset), initial=len(dataset) - sum(c.stop - c.start for c in todo), unit="prompt",
              desc="filter", disable=not progress, dynamic_ncols=True) as bar:
        sample = _sampler(generator, seed)
        _sample_and_score(sample, reward_pool, dataset, journal, todo, samples, joint, clock, bar)
    mix = _Mix(joint, rebalance_to, 0 if seed is None else seed)
    return _finish(dataset, out, journal, chunks, samples, correct_threshold, mix, clock, began)


def _sampler(generator: Generator, seed: int | None):
    """generate(requests, chunk_index): seeded per chunk when both a seed and the generator allow it."""
    try:
        parameters = inspect.signature(generator.generate).parameters
    except (TypeError, ValueError):
        parameters = {}
    takes_seed = "seed" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    if seed is None or not takes_seed:
        if seed is not None:
            log.warning("%s.generate takes no seed: a resumed run will not sample exactly what an "
                        "uninterrupted one would", type(generator).__name__)
        return lambda requests, chunk_index: generator.generate(requests)
    return lambda requests, chunk_index: generator.generate(requests, seed=seed + chunk_index)


def _sample_and_score(generate, reward_pool, dataset, journal, todo, samples, joint, clock, bar) -> None:
    """Generate chunk i+1 while chunk i is scored and journaled in a background thread."""
    scoring: Future | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="filter-score") as scorer:
        warm = scorer.submit(load_plotting) if todo else None  # overlaps the first chunk's generation
        try:
            for chunk in todo:
                rows = read_rows(dataset, chunk.start, chunk.stop)
                requests = [r for i, row in enumerate(rows) for r in _requests(row, chunk.start + i, samples, joint)]
                started = time.monotonic()
                groups = generate(requests, chunk.index)
                seconds = time.monotonic() - started
                _check_groups(requests, groups, samples)
                if scoring is not None:
                    previous, scoring = scoring, None
                    previous.result()
                scoring = scorer.submit(_score_chunk, reward_pool, journal, chunk, rows, groups, seconds, clock, bar)
            if scoring is not None:
                previous, scoring = scoring, None
                previous.result()
            if warm is not None:
                warm.result()
        finally:
            if scoring is not None:  # interrupted while generating: still journal the chunk already sampled
                try:
                    scoring.result()
                except Exception:  # noqa: BLE001 - the original error is the one to raise
                    log.exception("scoring the last generated chunk failed during shutdown")


def _requests(row: dict, index: int, samples: int, joint: bool) -> list[GenerationRequest]:
    """The row's request in its own mode, then with `joint` in its other mode."""
    own = request_for(row, index, samples)
    return [own, request_for(row, index, samples, other_mode(row["mode"]))] if joint else [own]


def _check_groups(requests: list[GenerationRequest], groups: list[RolloutGroup], samples: int) -> None:
    if len(groups) != len(requests):
        raise FilterGeneratorError(f"generator returned {len(groups)} groups for {len(requests)} requests")
    for request, group in zip(requests, groups):
        if group.request_id != request.request_id:
            raise FilterGeneratorError(f"generator returned group {group.request_id!r} where {request.request_id!r} was expected")
        if len(group.samples) != samples:
            raise FilterGeneratorError(f"request {request.request_id}: {len(group.samples)} samples, expected {samples}")


def _score_chunk(reward_pool, journal, chunk, rows, groups, generation_seconds, clock, bar) -> None:
    """Score, journal and count one chunk. A prompt's identical completions in one mode are scored once
    (verifiable rewards are deterministic; a model that always solves a prompt often repeats the same answer).
    `groups` holds one group per row, or with joint sampling two (own mode, other mode)."""
    per_row = len(groups) // len(rows)
    unique: dict[tuple[int, str, str], int] = {}
    inputs = []
    for offset, row in enumerate(rows):
        for group in groups[offset * per_row:(offset + 1) * per_row]:
            for sample, item in zip(group.samples, reward_inputs(row, group.samples, group.mode)):
                if unique.setdefault((offset, group.mode, sample.text), len(inputs)) == len(inputs):
                    inputs.append(item)
    started = time.monotonic()
    outputs = reward_pool.score(inputs)
    seconds = time.monotonic() - started
    if len(outputs) != len(inputs):
        raise RuntimeError(f"reward pool returned {len(outputs)} outputs for {len(inputs)} samples")

    def sample_records(offset: int, group: RolloutGroup) -> list[SampleRecord]:
        return [_sample_record(s, outputs[unique[(offset, group.mode, s.text)]]) for s in group.samples]

    records = []
    for offset, row in enumerate(rows):
        own, *other = groups[offset * per_row:(offset + 1) * per_row]
        records.append(PromptRecord(
            index=chunk.start + offset,
            id=None if row.get("id") is None else str(row["id"]),
            mode=row["mode"],
            domain=str(row.get("domain") or "unknown"),
            samples=sample_records(offset, own),
            cross_samples=[r for group in other for r in sample_records(offset, group)],
        ))
    journal.write(ChunkHeader(chunk.index, chunk.start, chunk.stop, generation_seconds, seconds), records)
    with clock.lock:
        clock.generation += generation_seconds
        clock.scoring += seconds
        clock.generated += len(rows)
    bar.update(len(rows))


def _sample_record(sample, output: RewardOutput) -> SampleRecord:
    return SampleRecord(text=sample.text, token_ids=list(sample.token_ids), finish_reason=sample.finish_reason,
                        score=float(output.score), error=output.error)


@dataclass(frozen=True)
class _Mix:
    joint: bool
    rebalance_to: float | Literal["input"] | None
    seed: int


def _finish(dataset, out, journal, chunks, samples, threshold, mix: _Mix, clock, began) -> FilterReport:
    finish_began = time.monotonic()
    tally = PassCountTally(samples, threshold)
    decided = _decide(dataset, journal, chunks, tally)
    target = tally.mode_shares(_prompts).get(REASONING, 0.0) if mix.rebalance_to == INPUT_SHARE else mix.rebalance_to
    if target is not None:
        decided.kept = _rebalanced(decided.kept, decided.kept_cells, target, mix.seed)
    _save_dataset(dataset, decided.kept, [decided.pass_counts[i] for i in decided.kept], samples, out)
    by_mode_domain = tally.by_mode_domain()
    passed = sum(c.passed for c in tally.cells.values())
    report = FilterReport(
        input=len(dataset), kept=len(decided.kept), dropped_all_correct=len(dataset) - passed,
        histogram=tally.by_mode(), by_mode_domain=by_mode_domain, samples_per_prompt=samples,
        correct_threshold=threshold, sample_accuracy=tally.correct / max(1, tally.total),
        truncated_samples=tally.truncated, reward_errors=tally.errors, reward_error_kinds=tally.top_errors(),
        generated_prompts=clock.generated, resumed_prompts=len(dataset) - clock.generated,
        generation_seconds=round(clock.generation, 3), scoring_seconds=round(clock.scoring, 3),
        wall_seconds=0.0, setup_seconds=round(clock.setup, 3), finish_seconds=0.0,
        journal_generation_seconds=round(decided.journal_generation, 3),
        dataset_dir=str(out / DATASET_DIR), journal_dir=str(journal.dir),
        joint=mix.joint, kept_by_joint=sum(c.kept_by_joint for c in tally.cells.values()),
        rebalance_share=target, dropped_rebalance=passed - len(decided.kept),
        input_share=tally.mode_shares(_prompts), filtered_share=tally.mode_shares(lambda c: c.passed),
        kept_share=tally.mode_shares(lambda c: c.kept),
    )
    report.plots = plot_histograms(by_mode_domain, samples, out) + [plot_mix(report, out)]
    report.finish_seconds = round(time.monotonic() - finish_began, 3)
    report.wall_seconds = round(time.monotonic() - began, 3)
    write_report(report, out)  # last: its presence means the output folder is complete
    return report


def _prompts(cell: TallyCell) -> int:
    return sum(cell.histogram.values())


@dataclass
class _Decided:
    kept: list[int]  # row indices, in dataset order
    kept_cells: list[TallyCell]  # each kept row's (mode, domain) cell
    pass_counts: array  # per input row, in its own mode
    journal_generation: float


def _decide(dataset, journal, chunks, tally: PassCountTally) -> _Decided:
    """Streams the journal through the drop rule (filtering.decide.keeps) into the tally."""
    decided = _Decided([], [], array("i", [-1]) * len(dataset), 0.0)
    for chunk in chunks:
        header, records = journal.read(chunk.index)
        decided.journal_generation += header.generation_seconds
        for record in records:
            keep = keeps(record, tally.threshold)
            cell = tally.add(record, keep)
            decided.pass_counts[record.index] = record.pass_count(tally.threshold)
            if keep:
                decided.kept.append(record.index)
                decided.kept_cells.append(cell)
    return decided


def _rebalanced(kept: list[int], kept_cells: list[TallyCell], target: float, seed: int) -> list[int]:
    """The kept row indices cut to the reasoning share `target`; counts the rows dropped in their cells."""
    positions = rebalance([cell.mode for cell in kept_cells], target, seed)
    chosen = set(positions)
    for position, cell in enumerate(kept_cells):
        cell.dropped_rebalance += position not in chosen
    return [kept[p] for p in positions]


def _save_dataset(dataset: Dataset, kept: list[int], pass_counts: list[int], samples: int, out: Path) -> None:
    """The kept rows plus pass_count / sample_count, saved to a temporary folder then renamed.

    The intermediate Arrow files go to a work folder under `out`: by default `datasets` would write them
    as cache files next to the INPUT dataset, i.e. into the user's (or checkpoint's) data folder."""
    final, tmp, old, work = (out / f"{prefix}{DATASET_DIR}{suffix}"
                             for prefix, suffix in (("", ""), (".", ".tmp"), (".", ".old"), (".", ".work")))
    for stale in (tmp, old, work):
        shutil.rmtree(stale, ignore_errors=True)
    work.mkdir()
    subset = dataset.select(kept, indices_cache_file_name=str(work / "indices.arrow"))
    subset = subset.flatten_indices(cache_file_name=str(work / "rows.arrow"))
    subset = subset.remove_columns([c for c in (PASS_COUNT, SAMPLE_COUNT) if c in subset.column_names])
    subset = subset.add_column(PASS_COUNT, pass_counts).add_column(SAMPLE_COUNT, [samples] * len(kept))
    subset.save_to_disk(str(tmp))
    del subset
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
