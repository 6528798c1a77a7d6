"""Accuracy-based pre-filter: drop the prompts an SFT model already always solves (see accuracy.py)."""
from .accuracy import DATASET_DIR, FilterGeneratorError, run_filter
from .journal import ChunkJournal, JournalMismatch, PromptRecord, SampleRecord
from .report import FilterReport
from .rows import FilterDataError

__all__ = [
    "DATASET_DIR", "ChunkJournal", "FilterDataError", "FilterGeneratorError", "FilterReport", "JournalMismatch",
    "PromptRecord", "SampleRecord", "run_filter",
]
