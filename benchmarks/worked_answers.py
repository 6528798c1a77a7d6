"""How the built-in model answers math in reasoning mode: worked out, or "unworked" (the think block says
`I can answer this directly.`, BootstrapConfig.unworked_share), and how often each kind is right.

RL's gain on the demo comes from moving the model from unworked to worked answers, so it is only as
large as the gap between the two accuracies. For worked answers it also says where they go wrong: a
step that misreads the problem (operands or operation differ from the gold trace) or a step whose
arithmetic is false.

Usage: python benchmarks/worked_answers.py CONFIG --model DIR [--samples 8] [--limit N] [--json OUT] [key=value ...]
Samples each math problem of the eval split at eval.reasoning's sampling (T=0.6, top-p 0.95 in the demo).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dualmode_rl.orchestration.bootstrap.sft import UNWORKED_THOUGHT  # noqa: E402
from dualmode_rl.orchestration.components import build_local_engine, build_reward_pool  # noqa: E402
from dualmode_rl.orchestration.config import load_config  # noqa: E402
from dualmode_rl.orchestration.data import default_source, load_split, request_for  # noqa: E402
from dualmode_rl.rewards.arithmetic_steps import first_wrong_step  # noqa: E402
from dualmode_rl.rewards.format import THINK_CLOSE  # noqa: E402
from dualmode_rl.rewards.types import RewardInput  # noqa: E402

_STEP = re.compile(r"^\s*(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)\s*$")


def _step(line: str) -> tuple[int, str, int, int] | None:
    match = _STEP.match(line)
    return (int(match[1]), match[2], int(match[3]), int(match[4])) if match else None


def classify(completion: str, gold_reasoning: str) -> str:
    """'unworked', 'unclosed', 'misread' (a step's operation or operands are not the problem's: the first
    operand must be the previous step's shown result), 'arithmetic' (a step is false), or 'steps_ok'."""
    if THINK_CLOSE not in completion:
        return "unclosed"
    think = completion.split(THINK_CLOSE, 1)[0]
    if UNWORKED_THOUGHT in think:
        return "unworked"
    steps = [_step(line) for line in think.splitlines() if "=" in line]
    gold = [_step(line) for line in gold_reasoning.splitlines()]
    if len(steps) != len(gold) or None in steps:
        return "misread"
    carried = gold[0][0]
    for (a, op, b, shown), (_, gold_op, gold_b, _) in zip(steps, gold):
        if (a, op, b) != (carried, gold_op, gold_b):
            return "misread"
        if first_wrong_step(f"{a}{op}{b}={shown}"):
            return "arithmetic"
        carried = shown
    return "steps_ok"


def _rate(hits: int, n: int) -> float:
    return round(hits / n, 4) if n else 0.0


def analyse(cfg, model: str, samples: int, limit: int | None) -> dict:
    rows = [r for r in load_split(cfg.data.test or default_source(cfg), cfg.eval.split) if r["domain"] == "math"]
    rows = rows[:limit] if limit else rows
    engine = build_local_engine(cfg, model, evaluation=True)
    rewards = build_reward_pool(cfg, evaluation=True)
    try:
        groups = engine.generate([request_for(r, "reasoning", n=samples) for r in rows], seed=cfg.eval.seed)
        pairs = [(s.text, r) for g, r in zip(groups, rows) for s in g.samples]
        scores = rewards.score([RewardInput(text, "reasoning", r) for text, r in pairs])
    finally:
        engine.shutdown()
        rewards.close()
    kinds, right = Counter(), Counter()
    by_steps: dict[str, Counter] = {}
    for (text, row), out in zip(pairs, scores):
        kind = classify(text, row["reasoning"])
        ok = out.score >= 1.0 - 1e-9
        kinds[kind] += 1
        right[kind] += ok
        worked = "unworked" if kind == "unworked" else "worked"
        tally = by_steps.setdefault(str(row["steps"]), Counter())
        tally[worked] += 1
        tally[worked + "_right"] += ok
    n = len(pairs)
    n_worked = n - kinds["unworked"]
    return {
        "model": model, "problems": len(rows), "samples": n,
        "accuracy": _rate(sum(right.values()), n),
        "unworked_share": _rate(kinds["unworked"], n),
        "unworked_right": _rate(right["unworked"], kinds["unworked"]),
        "worked_right": _rate(sum(right.values()) - right["unworked"], n_worked),
        "worked_kinds": {k: _rate(kinds[k], n_worked) for k in ("steps_ok", "misread", "arithmetic", "unclosed")},
        "by_steps": {s: {"unworked_share": _rate(c["unworked"], c["unworked"] + c["worked"]),
                         "unworked_right": _rate(c["unworked_right"], c["unworked"]),
                         "worked_right": _rate(c["worked_right"], c["worked"])} for s, c in sorted(by_steps.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--model", required=True)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--limit", type=int, help="first N math problems of the split")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    cfg = load_config(args.config, args.overrides)
    cfg.model = args.model
    result = analyse(cfg, args.model, args.samples, args.limit)
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
