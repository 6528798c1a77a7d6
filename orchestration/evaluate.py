"""`unirl eval`: greedy generation on a split in both modes, scored by the configured rewards."""
from __future__ import annotations

from collections import defaultdict
from statistics import mean

from datasets import Dataset

from rewards.format import split_answer
from rewards.types import RewardInput
from rollout.types import MODES

from .data import request_for


def _rate(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 4) if flags else 0.0


def evaluate(generator, reward_pool, dataset: Dataset, correct_threshold: float = 1.0 - 1e-9) -> dict:
    """Every row in both modes; returns {mode: {accuracy, n, by_domain, by_steps, mean_length, malformed, truncated}}."""
    rows = list(dataset)
    result = {}
    for mode in MODES:
        groups = generator.generate_greedy([request_for(row, mode) for row in rows])
        samples = [g.samples[0] for g in groups]
        scores = reward_pool.score([RewardInput(s.text, mode, row) for s, row in zip(samples, rows)])
        correct = [o.score >= correct_threshold for o in scores]
        by_domain, by_steps = defaultdict(list), defaultdict(list)
        for row, ok in zip(rows, correct):
            by_domain[row.get("domain", "all")].append(ok)
            if row.get("domain") == "math" and "steps" in row:
                by_steps[str(row["steps"])].append(ok)
        result[mode] = {
            "accuracy": _rate(correct),
            "n": len(rows),
            "by_domain": {d: _rate(v) for d, v in sorted(by_domain.items())},
            "by_steps": {k: _rate(v) for k, v in sorted(by_steps.items())},
            "mean_length": round(mean(len(s.token_ids) for s in samples), 2) if samples else 0.0,
            "malformed": _rate([split_answer(s.text, mode)[1] is not None for s in samples]),
            "truncated": _rate([s.finish_reason == "length" for s in samples]),
        }
    return result


def format_table(report: dict) -> str:
    lines = [f"{'mode':<14}{'accuracy':>9}{'n':>6}{'length':>8}{'malformed':>10}  by domain"]
    for mode, r in report.items():
        domains = "  ".join(f"{d}={v:.2f}" for d, v in r["by_domain"].items())
        lines.append(f"{mode:<14}{r['accuracy']:>9.3f}{r['n']:>6}{r['mean_length']:>8.1f}{r['malformed']:>10.3f}  {domains}")
    return "\n".join(lines)


def run_eval(cfg, data: str | None = None, split: str | None = None) -> dict:
    from .components import build_engine, build_reward_pool
    from .data import default_source, load_split

    dataset = load_split(data or cfg.data.test or default_source(cfg), split or cfg.eval.split)
    if cfg.eval.limit:
        dataset = dataset.select(range(min(cfg.eval.limit, len(dataset))))
    rewards = build_reward_pool(cfg)
    engine = build_engine(cfg, cfg.model_path)
    try:
        return evaluate(engine, rewards, dataset)
    finally:
        engine.shutdown()
        rewards.close()
