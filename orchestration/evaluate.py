"""`dualmode-rl eval`: every problem of a split in both modes (sampled pass@1, or greedy), scored by the configured rewards."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import mean

from datasets import Dataset
from tqdm.auto import tqdm

from dualmode_rl.rewards.format import split_answer
from dualmode_rl.rewards.types import RewardInput
from dualmode_rl.rollout.thinking_budget import require_markers, think_markers, think_tokens
from dualmode_rl.rollout.types import MODES, REASONING, RolloutGroup

from .data import request_for
from .progress import per_mode

THINKING_BUDGETS = "thinking_budgets"  # the eval JSON's key for the budget sweep table


def _rate(flags: list[bool]) -> float:
    return round(sum(flags) / len(flags), 4) if flags else 0.0


def _generate(generator, rows: list[dict], mode: str, samples: int, greedy: bool, seed: int):
    if greedy:
        return generator.generate_greedy([request_for(row, mode) for row in rows])
    return generator.generate([request_for(row, mode, n=samples) for row in rows], seed=seed)


def evaluate(generator, reward_pool, dataset: Dataset, samples: int = 4, greedy: bool = False, seed: int = 0,
             correct_threshold: float = 1.0 - 1e-9) -> dict:
    """Every row in both modes; accuracy is pass@1 averaged over `samples` completions per problem (or
    one greedy one). Returns {mode: {accuracy, n, samples, by_domain, by_steps, mean_length, malformed, truncated}}.

    The bar counts the modes done (one generation call per mode, so the samples do not depend on the
    bar) and shows their accuracy."""
    rows = list(dataset)
    result = {}
    with tqdm(total=len(MODES), unit="mode", desc="eval", dynamic_ncols=True) as bar:
        for mode in MODES:
            bar.set_description(f"eval {mode}: {len(rows)} x {1 if greedy else samples}")
            result[mode] = _evaluate_mode(generator, reward_pool, rows, mode, samples, greedy, seed, correct_threshold)[0]
            bar.update()
            bar.set_postfix_str("accuracy: " + per_mode({m: r["accuracy"] for m, r in result.items()}))
        bar.set_description("eval")
    return result


def _evaluate_mode(generator, reward_pool, rows: list[dict], mode: str, samples: int, greedy: bool, seed: int,
                   correct_threshold: float) -> tuple[dict, list[RolloutGroup]]:
    groups = _generate(generator, rows, mode, samples, greedy, seed)
    pairs = [(s, row) for g, row in zip(groups, rows) for s in g.samples]
    samples_out = [s for s, _ in pairs]
    scores = reward_pool.score([RewardInput(s.text, mode, row) for s, row in pairs])
    correct = [o.score >= correct_threshold for o in scores]
    by_domain, by_steps = defaultdict(list), defaultdict(list)
    for (_, row), ok in zip(pairs, correct):
        by_domain[row.get("domain", "all")].append(ok)
        if row.get("domain") == "math" and "steps" in row:
            by_steps[str(row["steps"])].append(ok)
    stats = {
        "accuracy": _rate(correct),
        "n": len(rows),
        "samples": len(samples_out),
        "by_domain": {d: _rate(v) for d, v in sorted(by_domain.items())},
        "by_steps": {k: _rate(v) for k, v in sorted(by_steps.items())},
        "mean_length": round(mean(len(s.token_ids) for s in samples_out), 2) if samples_out else 0.0,
        "malformed": _rate([split_answer(s.text, mode)[1] is not None for s in samples_out]),
        "truncated": _rate([s.finish_reason == "length" for s in samples_out]),
    }
    return stats, groups


def thinking_budget_sweep(generator, reward_pool, dataset: Dataset, budgets: list[int], samples: int = 4,
                          greedy: bool = False, seed: int = 0, correct_threshold: float = 1.0 - 1e-9) -> list[dict]:
    """Reasoning mode at each thinking budget, then without one: one row per budget with accuracy, mean
    think tokens (as the budget counts them), the share of samples the budget cut, and the eval stats."""
    markers = require_markers(think_markers(generator.tokenizer), f"of {generator.model_path}")
    rows, table = list(dataset), []
    configured = generator.sampling
    try:
        for budget in [*budgets, None]:
            generator.sampling = configured.with_thinking_budget(budget)
            stats, groups = _evaluate_mode(generator, reward_pool, rows, REASONING, samples, greedy, seed,
                                              correct_threshold)
            drawn = [(g.prompt_token_ids, s) for g in groups for s in g.samples]
            table.append({
                "thinking_budget": budget,
                "accuracy": stats["accuracy"],
                "mean_think_tokens": round(mean(think_tokens(p, s.token_ids, markers) for p, s in drawn), 2),
                "budget_hit": _rate([s.budget_hit for _, s in drawn]),
                **{k: v for k, v in stats.items() if k != "accuracy"},
            })
    finally:
        generator.sampling = configured
    return table


def plot_thinking_budgets(table: list[dict], path: Path) -> Path:
    """Reasoning accuracy against mean think tokens, one point per budget ("none": unbudgeted)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 3.4))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    budgeted = [r for r in table if r["thinking_budget"] is not None]
    ax.plot([r["mean_think_tokens"] for r in budgeted], [r["accuracy"] for r in budgeted], marker="o", label="budget")
    ax.plot([r["mean_think_tokens"] for r in table if r not in budgeted],
            [r["accuracy"] for r in table if r not in budgeted], marker="s", linestyle="none", label="no budget")
    for r in table:
        label = "none" if r["thinking_budget"] is None else str(r["thinking_budget"])
        ax.annotate(label, (r["mean_think_tokens"], r["accuracy"]), textcoords="offset points", xytext=(4, 4),
                    fontsize=8)
    ax.legend(fontsize=7)
    ax.set(xlabel="mean think tokens", ylabel="reasoning accuracy (pass@1)", title="thinking budget")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=90)
    tmp.replace(path)
    return path


def _mode_report(rows: list[dict], pairs: list[tuple], correct: list[bool], mode: str) -> dict:
    samples_out = [s for s, _ in pairs]
    by_domain, by_steps = defaultdict(list), defaultdict(list)
    for (_, row), ok in zip(pairs, correct):
        by_domain[row.get("domain", "all")].append(ok)
        if row.get("domain") == "math" and "steps" in row:
            by_steps[str(row["steps"])].append(ok)
    return {
        "accuracy": _rate(correct),
        "n": len(rows),
        "samples": len(samples_out),
        "by_domain": {d: _rate(v) for d, v in sorted(by_domain.items())},
        "by_steps": {k: _rate(v) for k, v in sorted(by_steps.items())},
        "mean_length": round(mean(len(s.token_ids) for s in samples_out), 2) if samples_out else 0.0,
        "malformed": _rate([split_answer(s.text, mode)[1] is not None for s in samples_out]),
        "truncated": _rate([s.finish_reason == "length" for s in samples_out]),
    }


def format_table(report: dict) -> str:
    lines = [f"{'mode':<14}{'accuracy':>9}{'n':>6}{'length':>8}{'malformed':>10}  by domain"]
    for mode, r in ((m, report[m]) for m in MODES if m in report):
        domains = "  ".join(f"{d}={v:.2f}" for d, v in r["by_domain"].items())
        lines.append(f"{mode:<14}{r['accuracy']:>9.3f}{r['n']:>6}{r['mean_length']:>8.1f}{r['malformed']:>10.3f}  {domains}")
    if THINKING_BUDGETS in report:
        lines += ["", f"{'thinking budget':<16}{'accuracy':>9}{'think tokens':>13}{'budget hit':>11}{'length':>8}"]
        for r in report[THINKING_BUDGETS]:
            budget = "none" if r["thinking_budget"] is None else r["thinking_budget"]
            lines.append(f"{budget!s:<16}{r['accuracy']:>9.3f}{r['mean_think_tokens']:>13.1f}"
                         f"{r['budget_hit']:>11.3f}{r['mean_length']:>8.1f}")
    return "\n".join(lines)


def run_eval(cfg, data: str | None = None, split: str | None = None, thinking_budgets: list[int] | None = None) -> dict:
    """Both modes, and with `thinking_budgets` also the reasoning-mode sweep under key "thinking_budgets"."""
    from .components import build_engine, build_reward_pool
    from .data import default_source, load_split
    from .preflight import check_generation_limits, check_model

    model = check_model(cfg.model_path)  # the user's model is named first, before any data look-up
    source = data or cfg.data.test or default_source(cfg)
    dataset = load_split(source, split or cfg.eval.split)
    if cfg.eval.limit:
        dataset = dataset.select(range(min(cfg.eval.limit, len(dataset))))
    check_generation_limits(cfg, model.tokenizer, dataset, source, both_modes=True)
    rewards = build_reward_pool(cfg, evaluation=True)
    engine = build_engine(cfg, cfg.model_path, evaluation=True)
    try:
        settings = (cfg.eval.samples, cfg.eval.greedy, cfg.eval.seed)
        report = evaluate(engine, rewards, dataset, *settings)
        if thinking_budgets:
            report[THINKING_BUDGETS] = thinking_budget_sweep(engine, rewards, dataset, thinking_budgets, *settings)
        return report
    finally:
        engine.shutdown()
        rewards.close()
