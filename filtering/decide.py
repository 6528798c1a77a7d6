"""What the filter keeps: the drop rule (in the prompt's mode, or jointly in both) and the mode-mix rebalancing.

Rebalancing drops rows, never duplicates them: a duplicated prompt would be trained on twice as often
as the others in every epoch, and a prompt the model nearly always solves would weigh double. It drops
a seeded random subset of the over-represented mode, so that mode's mix of domains and difficulties
stays as the filter left it in expectation.
"""
from __future__ import annotations

import random

from dualmode_rl.rollout.types import REASONING

from .journal import PromptRecord, SampleRecord


class RebalanceError(ValueError):
    """The kept set cannot reach the target mode mix without dropping every prompt."""


def all_correct(samples: list[SampleRecord], threshold: float) -> bool:
    return all(s.score >= threshold for s in samples)


def keeps(record: PromptRecord, threshold: float) -> bool:
    """Drop a prompt only when every sample is right in its mode and, when it was also sampled in the
    other mode (filter.joint: `cross_samples`), every sample there is right too."""
    return not (all_correct(record.samples, threshold) and all_correct(record.cross_samples, threshold))


def rebalance(modes: list[str], reasoning_share: float, seed: int) -> list[int]:
    """The positions in `modes` to keep, in order, so that the kept reasoning count is within one prompt of
    `reasoning_share` times the kept total, by dropping a seeded random subset of the over-represented mode.

    Keeping r' = round(s·n / (1 - s)) of r reasoning rows next to n others gives |r' - s·(r' + n)| =
    (1 - s)·|r' - s·n / (1 - s)| <= 1/2; the same holds with the modes swapped."""
    reasoning = [i for i, mode in enumerate(modes) if mode == REASONING]
    others = [i for i, mode in enumerate(modes) if mode != REASONING]
    share = reasoning_share
    if len(reasoning) * (1 - share) > share * len(others):
        over, under, keep = reasoning, others, round(share * len(others) / (1 - share))
    elif len(reasoning) * (1 - share) < share * len(others):
        over, under, keep = others, reasoning, round((1 - share) * len(reasoning) / share)
    else:
        return list(range(len(modes)))
    if keep == 0 and not under:
        raise RebalanceError(
            f"filter.rebalance: the filter kept {len(reasoning)} reasoning and {len(others)} non-reasoning prompts; "
            f"a reasoning share of {share:g} cannot be reached without dropping every prompt"
        )
    kept_over = random.Random(seed).sample(over, keep)
    return sorted(under + kept_over)
