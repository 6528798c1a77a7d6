"""The filter's resumable journal: one JSON-lines shard per finished chunk of prompts.

Layout under `<out_dir>/journal/`:
- `meta.json`: what the journal was made from (dataset fingerprint, size, samples, chunk size, caller key);
  a rerun with other inputs is refused rather than silently mixing results;
- `chunk-000012.jsonl`: a header line (chunk bounds, timings), then one line per prompt with every
  sample's text, token ids, finish reason, score and reward error (with `filter.joint`, also the samples
  in the prompt's other mode, `cross_samples`). Written to a temporary name, then
  renamed, so a shard either exists complete or not at all.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

JOURNAL_DIR = "journal"
META_FILE = "meta.json"
SHARD_PATTERN = "chunk-{:06d}.jsonl"


class JournalMismatch(ValueError):
    """The journal in the output folder was made from other inputs."""


@dataclass
class SampleRecord:
    text: str
    token_ids: list[int]
    finish_reason: str
    score: float
    error: str | None = None


@dataclass
class PromptRecord:
    index: int  # row index in the input dataset
    id: str | None
    mode: str
    domain: str
    samples: list[SampleRecord] = field(default_factory=list)  # in the row's mode
    cross_samples: list[SampleRecord] = field(default_factory=list)  # in the other mode (filter.joint), else none

    def pass_count(self, threshold: float) -> int:
        return sum(s.score >= threshold for s in self.samples)


@dataclass
class ChunkHeader:
    chunk: int
    start: int
    stop: int
    generation_seconds: float
    scoring_seconds: float


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class ChunkJournal:
    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir) / JOURNAL_DIR

    def open(self, meta: dict) -> None:
        """Create the journal for `meta`, or check that the existing one was made from the same inputs."""
        meta = json.loads(json.dumps(meta, default=str))  # compare in the form it is stored in
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob(".*.tmp-*"):  # left by a run killed mid-write
            stale.unlink(missing_ok=True)
        path = self.dir / META_FILE
        if not path.exists():
            write_atomic(path, json.dumps(meta, indent=2, sort_keys=True))
            return
        old = json.loads(path.read_text())
        differ = sorted(k for k in set(old) | set(meta) if old.get(k) != meta.get(k))
        if differ:
            raise JournalMismatch(
                f"{path}: the journal in this output folder was made from other inputs (differs in {differ}); "
                "use another output folder or delete this one"
            )

    def shard_path(self, chunk: int) -> Path:
        return self.dir / SHARD_PATTERN.format(chunk)

    def has(self, chunk: int) -> bool:
        return self.shard_path(chunk).exists()

    def write(self, header: ChunkHeader, records: list[PromptRecord]) -> None:
        lines = [json.dumps(asdict(header))] + [json.dumps(asdict(r), ensure_ascii=False) for r in records]
        write_atomic(self.shard_path(header.chunk), "\n".join(lines) + "\n")

    def read(self, chunk: int) -> tuple[ChunkHeader, list[PromptRecord]]:
        path = self.shard_path(chunk)
        with open(path, encoding="utf-8") as handle:
            header = ChunkHeader(**json.loads(handle.readline()))
            return header, [_record(json.loads(line)) for line in handle if line.strip()]

    def chunks(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.dir.glob("chunk-*.jsonl"))

    def records(self) -> Iterator[PromptRecord]:
        """Every journaled prompt, in dataset order (for re-scoring and audits)."""
        for chunk in self.chunks():
            yield from self.read(chunk)[1]


def _record(raw: dict) -> PromptRecord:
    raw["samples"] = [SampleRecord(**s) for s in raw["samples"]]
    raw["cross_samples"] = [SampleRecord(**s) for s in raw.get("cross_samples", ())]
    return PromptRecord(**raw)
