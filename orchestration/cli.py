"""The `dualmode-rl` command: bootstrap, eval, verify, filter, train, check, plan, report, demo."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

# OpenMP threads sleep at a barrier instead of spinning (read once, when torch loads libgomp; an explicit
# setting wins). Where other processes share the cores, a spinning thread burns the time slice its partner
# needs: a bootstrap SFT step with 2 threads took 8.1 s spinning and 1.7 s sleeping on the shared 2-core
# box (1.0-1.5 s with 1 thread).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from dualmode_rl.atomic import write_json_atomic  # noqa: E402
from .config import ConfigError, DualModeConfig, load_config


def _config(args) -> DualModeConfig:
    cfg = load_config(args.config, args.overrides)
    if getattr(args, "model", None):
        cfg.model = args.model
    return cfg


def cmd_bootstrap(args) -> int:
    from .bootstrap import bootstrap, is_bootstrapped

    cfg = _config(args)
    out = Path(args.out or cfg.bootstrap.out)
    if is_bootstrapped(out, cfg.bootstrap) and not args.force:
        print(f"bootstrap checkpoint already at {out} (use --force to rebuild)")
        return 0
    bootstrap(cfg.bootstrap, out)
    print(f"bootstrap checkpoint written to {out}")
    return 0


def cmd_eval(args) -> int:
    from .evaluate import THINKING_BUDGETS, format_table, plot_thinking_budgets, run_eval

    if args.thinking_budgets and not args.json:
        print("dualmode-rl: eval --thinking-budgets needs --json (the table goes into it, the plot next to it)",
              file=sys.stderr)
        return 2
    cfg = _config(args)
    report = run_eval(cfg, data=args.data, split=args.split, thinking_budgets=args.thinking_budgets)
    print(format_table(report))
    if args.json:
        write_json_atomic(args.json, report)
    if args.thinking_budgets:
        json_path = Path(args.json)
        print(plot_thinking_budgets(report[THINKING_BUDGETS], json_path.with_name(json_path.stem + ".thinking_budgets.png")))
    return 0


def _budgets(text: str) -> list[int]:
    try:
        budgets = [int(part) for part in text.split(",")]
    except ValueError:
        budgets = []
    if not budgets or any(b < 0 for b in budgets):
        raise argparse.ArgumentTypeError(f"expected comma-separated token counts >= 0, e.g. 16,32,64; got {text!r}")
    return budgets


def cmd_verify(args) -> int:
    from dualmode_rl.rewards.verify_file import verify_file

    import yaml

    from .components import load_configured_reward
    from .config import DataConfig, reward_spec

    reward = load_configured_reward(reward_spec(args.reward, completion_format=args.completion_format))
    rows = None
    if not args.input.endswith(".jsonl"):
        from .data import completion_rows

        rows = completion_rows(args.input, DataConfig(columns=yaml.safe_load(args.columns or "{}")).columns)
    summary = verify_file(reward, args.input, args.output, tokenizer=args.tokenizer, rows=rows)
    print(json.dumps(summary))
    return 0


def cmd_filter(args) -> int:
    from .prefilter import run_filter_command

    cfg = _config(args)
    report = run_filter_command(cfg, data=args.data, out=args.out, split=args.split)
    print(json.dumps({k: report[k] for k in ("input", "kept", "dropped_all_correct")}))
    return 0


def cmd_train(args) -> int:
    from .loop import train

    resume = "auto" if args.resume_auto else "yes" if args.resume else "no"
    train(_config(args), resume=resume, allow_config_change=args.allow_config_change)
    return 0


def cmd_check(args) -> int:
    from .check import run_check

    return run_check(_config(args))


def cmd_plan(args) -> int:
    from .plan import plan

    print(plan(_config(args), gpu_memory_gib=args.gpu_memory_gib))
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    print(write_report(Path(args.run_dir), smoothing=args.smoothing))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(_config(args), Path(args.out))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dualmode-rl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, handler, help_text, config=True):
        p = sub.add_parser(name, help=help_text)
        if config:
            p.add_argument("config", nargs="?", help="YAML config file")
            p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
        p.set_defaults(handler=handler)
        return p

    p = command("bootstrap", cmd_bootstrap, "build the built-in tiny SFT checkpoint")
    p.add_argument("--out", help="checkpoint folder (default: bootstrap.out)")
    p.add_argument("--force", action="store_true", help="rebuild even if it exists")
    p = command("eval", cmd_eval, "pass@1 in both modes, at each mode's recommended sampling (eval.*)")
    p.add_argument("--model", help="checkpoint folder (default: the bootstrap checkpoint)")
    p.add_argument("--data", help="dataset (default: the model's bundled task suite)")
    p.add_argument("--split", default=None, help="split name (default: eval.split)")
    p.add_argument("--json", help="write the result here")
    p.add_argument("--thinking-budgets", type=_budgets, metavar="N,N,...",
                   help="also reasoning accuracy at each thinking budget and unbudgeted: a table in the --json "
                        "file and a plot of accuracy against think tokens next to it (needs --json)")
    p = command("verify", cmd_verify, "score a JSONL file of completions offline", config=False)
    p.add_argument("--reward", required=True,
                   help="math, code, format, auto, a plug-in path, or a rewards.rewards entry as inline YAML: "
                        "'{name: trl.rewards:accuracy_reward, columns: {solution: answer}}'")
    p.add_argument("--completion-format", choices=["text", "messages"],
                   help="TRL-style rewards: completions (and prompts) as strings or as chat messages (default: text)")
    p.add_argument("--tokenizer", help="a model folder: tokenize the completions of rows without completion_ids")
    p.add_argument("--input", required=True,
                   help="JSON lines, or a .parquet file, `datasets` folder or Hub name read as training reads data")
    p.add_argument("--columns", help="as data.columns, for a non-JSONL input: '{answer: solution}'")
    p.add_argument("--output", required=True)
    p = command("filter", cmd_filter, "drop prompts that all 8 samples already solve")
    p.add_argument("--model")
    p.add_argument("--data", help="dataset (default: the model's bundled task suite)")
    p.add_argument("--split", default="train")
    p.add_argument("--out", help="output folder (default: filter.out or RUN/filter)")
    p = command("train", cmd_train, "run RL post-training")
    p.add_argument("--model")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in train.out (an error when there is none)")
    p.add_argument("--resume=auto", dest="resume_auto", action="store_true",
                   help="continue from the latest checkpoint in train.out, or start afresh when there is none")
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: accept model, data or algorithm settings that differ from the run's config.yaml")
    p = command("check", cmd_check, "check a config, model, rewards, checkpointing and one learner step before a long run")
    p.add_argument("--model")
    p = command("plan", cmd_plan, "memory per GPU of the learner and vLLM for a config (reads config.json, no weights)")
    p.add_argument("--model", help="model folder (default: the config's model)")
    p.add_argument("--gpu-memory-gib", type=float, default=80.0, help="memory of one GPU (default: 80)")
    p = command("report", cmd_report, "write a Markdown report with plots for a run", config=False)
    p.add_argument("run_dir")
    p.add_argument("--smoothing", type=float, default=0.6,
                   help="weight of the curves' exponential moving average, in [0, 1) (TensorBoard's slider)")
    p = command("demo", cmd_demo, "bootstrap, evaluate, filter, train and evaluate again")
    p.add_argument("--out", default="runs/demo", help="demo folder (summary.json, filter/, train/)")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # run `finally` clean-ups
    parser = _parser()
    args, rest = parser.parse_known_args(argv)  # overrides may also follow options: CONFIG --model X a.b=1
    if rest and (not hasattr(args, "overrides") or any("=" not in r or r.startswith("-") for r in rest)):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if rest:
        args.overrides += rest
    config_arg = getattr(args, "config", None)
    if config_arg and "=" in config_arg and not Path(config_arg).exists():
        args.overrides.insert(0, config_arg)  # `dualmode-rl train a.b=1` without a config file
        args.config = None
    try:
        return args.handler(args)
    except _user_errors() as exc:
        print(f"dualmode-rl: {exc}", file=sys.stderr)
        return 2


def _user_errors() -> tuple[type[Exception], ...]:
    """Bad input from the user: reported in one clear line, no traceback."""
    from dualmode_rl.filtering import FilterDataError
    from dualmode_rl.rewards.jsonl import InputError
    from dualmode_rl.rewards.registry import RewardPluginError

    from .checkpoint import CheckpointError
    from .metrics import RewardFailure

    return (ConfigError, InputError, FilterDataError, RewardPluginError, CheckpointError, RewardFailure,
            FileNotFoundError)

if __name__ == "__main__":
    sys.exit(main())
