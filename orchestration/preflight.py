"""Start-up checks: what a command needs is checked before any Ray actor, vLLM engine or run-folder file exists.

- The model folder: config, complete weights, a tokenizer that loads, and a chat template whose
  `enable_thinking` switch renders the two modes' generation prompts differently.
- The prompts: readable, every row valid (rows numbered from 1).
- Generation limits: the longest prompt of each mode plus `rollout.<mode>.max_tokens` fits
  `rollout.max_model_len`; nothing is truncated silently.
- The rewards: every plug-in loads.
- A resume: a checkpoint exists (or `--resume=auto`), every file of it is whole, and the model, data and
  algorithm settings are those of the run's config.yaml (or `--allow-config-change`).
A failed check raises an error naming the file, row, key or plug-in at fault.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dualmode_rl.rewards.pool import RewardPool
from dualmode_rl.rollout.modes import render_prompt_ids
from dualmode_rl.rollout.types import MODES, NON_REASONING, REASONING

from .checkpoint import CheckpointError, LoopState, check_model_folder, latest_checkpoint, load_loop_state, \
    verify_checkpoint
from .components import build_reward_pool, max_model_len, model_max_length
from .config import CPU_MAX_MODEL_LEN, ConfigError, DualModeConfig
from .data import default_source, load_prompts, request_for
from .metrics import ERRORS_FILE

log = logging.getLogger(__name__)
PROBE_ROW = {"prompt": "What is 12 + 7?"}
# What makes a resumed run the same run: its model, its data and their order, its algorithm.
RESUME_KEYS = ("model", "data", "algorithm", "rewards.rewards", "train.seed", "train.prompts_per_step",
               "rollout.samples_per_prompt")
RESUME_MODES = ("no", "yes", "auto")


@dataclass
class ModelCheck:
    path: Path
    tokenizer: Any
    prefixes: dict[str, str]  # each mode's rendered generation prompt for the probe row


def check_model(path: str | Path, probe: dict | None = None) -> ModelCheck:
    """The model folder's files, its tokenizer, and its chat template's mode switch on one row (`probe`)."""
    path = check_model_folder(path)
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure means the same to the user
        raise CheckpointError(f"{path}: the tokenizer does not load: {type(exc).__name__}: {exc}") from None
    if tokenizer.eos_token_id is None:
        raise CheckpointError(f"{path}: the tokenizer has no eos token, so generation could not stop")
    if not getattr(tokenizer, "chat_template", None):
        raise CheckpointError(f"{path}: the tokenizer has no chat template (chat_template.jinja, or chat_template "
                              f"in tokenizer_config.json); dualmode-rl renders both modes through it")
    prefixes = {}
    for mode in MODES:
        try:
            ids = render_prompt_ids(tokenizer, request_for(probe or PROBE_ROW, mode))
        except Exception as exc:  # noqa: BLE001 - a template error, whatever its kind
            raise CheckpointError(f"{path}: the chat template fails in {mode} mode: {type(exc).__name__}: {exc}") from None
        prefixes[mode] = tokenizer.decode(ids)
    if prefixes[REASONING] == prefixes[NON_REASONING]:
        raise CheckpointError(
            f"{path}: the chat template ignores enable_thinking: both modes render the same prompt, ending "
            f"{prefixes[REASONING][-40:]!r}; dualmode-rl switches modes only through it (EXAONE 4.0's template opens "
            f"a reasoning answer with '<think>\\n' and a non-reasoning one with '<think>\\n\\n</think>\\n\\n')")
    return ModelCheck(path, tokenizer, prefixes)


def check_generation_limits(cfg: DualModeConfig, tokenizer, dataset, source, both_modes: bool = False) -> int:
    """rollout.max_model_len (resolved) after checking that every row's prompt, in its mode (or in both),
    leaves room for rollout.<mode>.max_tokens."""
    model_limit = model_max_length(cfg.model_path)
    limit = max_model_len(cfg)
    if limit > model_limit:
        raise ConfigError(f"rollout.max_model_len={limit} exceeds the model's max_position_embeddings={model_limit} "
                          f"({cfg.model_path}/config.json)")
    longest = {mode: (0, 0) for mode in MODES}  # tokens, row number
    columns = [c for c in ("prompt", "mode", "id") if c in dataset.column_names]
    for number, row in enumerate(dataset.select_columns(columns), 1):
        for mode in MODES if both_modes else (row["mode"],):
            tokens = len(render_prompt_ids(tokenizer, request_for(row, mode)))
            longest[mode] = max(longest[mode], (tokens, number), key=lambda t: t[0])
    for mode, (tokens, number) in longest.items():
        max_tokens = getattr(cfg.rollout, mode).max_tokens
        if number and tokens + max_tokens > limit:
            default = "" if cfg.rollout.max_model_len else (
                f" (default: the model's max_position_embeddings{'' if limit == model_limit else f', at most {CPU_MAX_MODEL_LEN} on CPU'})")
            raise ConfigError(
                f"rollout.max_model_len={limit}{default} is too small for rollout.{mode}.max_tokens={max_tokens}: "
                f"the longest {mode} prompt, {source} row {number}, has {tokens} tokens, and {tokens} + {max_tokens} "
                f"> {limit}; raise rollout.max_model_len (the model allows {model_limit}) or lower rollout.{mode}.max_tokens")
    return limit


def settings_changes(saved_config: Path, cfg: DualModeConfig) -> list[str]:
    """`key: saved -> now` for every RESUME_KEYS setting that differs from the run's config.yaml."""
    saved, now = _run_settings(yaml.safe_load(saved_config.read_text()) or {}), _run_settings(cfg.model_dump(mode="json"))
    return [f"{key}: {saved.get(key)!r} -> {now.get(key)!r}" for key in sorted(saved.keys() | now.keys())
            if saved.get(key) != now.get(key)]


def _run_settings(tree: dict) -> dict[str, Any]:
    flat = {"model": tree.get("model") or (tree.get("bootstrap") or {}).get("out")}
    for key in RESUME_KEYS[1:]:
        node: Any = tree
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        flat.update(_flatten(key, node))
    return flat


def _flatten(key: str, node) -> dict[str, Any]:
    if isinstance(node, dict):
        return {k: v for sub, value in node.items() for k, v in _flatten(f"{key}.{sub}", value).items()}
    return {key: node}


def resume_point(cfg: DualModeConfig, resume: str, allow_config_change: bool) -> tuple[LoopState, Path | None, str]:
    """(state, checkpoint, weights to start from) for `resume` "no", "yes" (a checkpoint must exist) or
    "auto" (resume when there is one, start afresh when not)."""
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    run_dir = Path(cfg.train.out)
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint and resume == "no":
        raise CheckpointError(f"{run_dir} already holds checkpoints: pass --resume, or set train.out elsewhere")
    if checkpoint is None:
        if resume == "yes":
            raise CheckpointError(f"{run_dir}: --resume, but there is no checkpoint to resume from "
                                  f"({run_dir / 'checkpoints' / 'latest'} does not exist); drop --resume to start "
                                  f"afresh, or pass --resume=auto to resume when there is a checkpoint")
        if resume == "auto":
            log.info("no checkpoint in %s: starting from step 0 (--resume=auto)", run_dir)
        return LoopState(), None, cfg.model_path
    if (run_dir / "config.yaml").is_file() and (changes := settings_changes(run_dir / "config.yaml", cfg)):
        if not allow_config_change:
            raise ConfigError(f"{run_dir / 'config.yaml'}: this resume changes the run's settings: {'; '.join(changes)}; "
                              f"resume with the run's settings, or pass --allow-config-change to accept the changes")
        log.warning("resuming with changed settings (--allow-config-change): %s", "; ".join(changes))
    verify_checkpoint(run_dir, checkpoint)
    log.info("resuming from %s", checkpoint)
    return load_loop_state(checkpoint), checkpoint, str(checkpoint / "policy")


@dataclass
class TrainStart:
    state: LoopState
    checkpoint: Path | None
    model_path: str  # the weights to start from: the model, or the checkpoint's policy
    dataset: Any
    rewards: RewardPool


def preflight_train(cfg: DualModeConfig, resume: str = "no", allow_config_change: bool = False) -> TrainStart:
    """Every check `dualmode-rl train` needs, before it starts Ray or writes into train.out."""
    model = check_model(cfg.model_path)
    state, checkpoint, start_model = resume_point(cfg, resume, allow_config_change)
    source = cfg.data.train or default_source(cfg)
    dataset = load_prompts(cfg, source, "train")
    check_generation_limits(cfg, model.tokenizer, dataset, source)
    rewards = build_reward_pool(cfg, errors_file=Path(cfg.train.out) / ERRORS_FILE)
    return TrainStart(state, checkpoint, start_model, dataset, rewards)
