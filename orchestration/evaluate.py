"""`dualmode-rl eval`: every problem of a split in both modes (sampled pass@1, or greedy), scored by the configured rewards."""
from __future__ import annotations

from collections import defaultdict
from statistics import mean

from datasets import Dataset

from dualmode_rl.filtering.rows import reward_inputs
from dualmode_rl.rewards.format import split_answer
from dualmode_rl.rollout.types import MODES

from .data import request_for


def _rate(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 4) if flags else 0.0


def _generate(generator, rows: list[dict], mode: str, samples: int, greedy: bool, seed: int):
    if greedy:
        return generator.generate_greedy([request_for(row, mode) for row in rows])
    return generator.generate([request_for(row, mode, n=samples) for row in rows], seed=seed)


def evaluate(generator, reward_pool, dataset: Dataset, samples: int = 4, greedy: bool = False, seed: int = 0,
             correct_threshold: float = 1.0 - 1e-9) -> dict:
    """Every row in both modes; accuracy is pass@1 averaged over `samples` completions per problem (or
    one greedy one). Returns {mode: {accuracy, n, samples, by_domain, by_steps, mean_length, malformed, truncated}}."""
    rows = list(dataset)
    result = {}
    for mode in MODES:
        groups = _generate(generator, rows, mode, samples, greedy, seed)
        pairs = [(s, row) for g, row in zip(groups, rows) for s in g.samples]
        samples_out = [s for s, _ in pairs]
        scores = reward_pool.score([item for g, row in zip(groups, rows) for item in reward_inputs(row, g.samples, mode)])
        correct = [o.score >= correct_threshold for o in scores]
        by_domain, by_steps = defaultdict(list), defaultdict(list)
        for (_, row), ok in zip(pairs, correct):
            by_domain[row.get("domain", "all")].append(ok)
            if row.get("domain") == "math" and "steps" in row:
                by_steps[str(row["steps"])].append(ok)
        result[mode] = {
            "accuracy": _rate(correct),
            "n": len(rows),
            "samples": len(samples_out),
            "by_domain": {d: _rate(v) for d, v in sorted(by_domain.items())},
            "by_steps": {k: _rate(v) for k, v in sorted(by_steps.items())},
            "mean_length": round(mean(len(s.token_ids) for s in samples_out), 2) if samples_out else 0.0,
            "malformed": _rate([split_answer(s.text, mode)[1] is not None for s in samples_out]),
            "truncated": _rate([s.finish_reason == "length" for s in samples_out]),
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
    from .data import default_source, load_prompts
    from .preflight import check_generation_limits, check_model

    model = check_model(cfg.model_path)  # the user's model is named first, before any data look-up
    source = data or cfg.data.test or default_source(cfg)
    dataset = load_prompts(cfg, source, split or cfg.eval.split, need_mode=False)  # both modes: rows' own unused
    if cfg.eval.limit:
        dataset = dataset.select(range(min(cfg.eval.limit, len(dataset))))
    check_generation_limits(cfg, model.tokenizer, dataset, source, both_modes=True)
    rewards = build_reward_pool(cfg, evaluation=True)
    engine = build_engine(cfg, cfg.model_path, evaluation=True)
    try:
        return evaluate(engine, rewards, dataset, cfg.eval.samples, cfg.eval.greedy, cfg.eval.seed)
    finally:
        engine.shutdown()
        rewards.close()
