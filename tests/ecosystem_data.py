"""Datasets in verl's and TRL's own formats, built from the shared GSM8K copy (../shared/data/gsm8k, SOURCES.md)."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import SHARED_DATA

VERL_SYSTEM = "You solve grade-school math. Put the final answer in \\boxed{}."
TRL_SYSTEM = "You are a careful math tutor."


def gsm8k_rows(count: int) -> list[dict]:
    """The `count` shortest GSM8K train problems (short enough for the tiny test tokenizer), with their
    final answer (the text after `#### `) as `gold`."""
    rows = [json.loads(line) for line in (SHARED_DATA / "gsm8k" / "train.jsonl").read_text().splitlines()]
    rows = sorted(rows, key=lambda r: len(r["question"]))[:count]
    return [{**r, "gold": r["answer"].rsplit("####", 1)[1].strip().replace(",", "")} for r in rows]


def verl_parquet(path: Path, count: int = 6, completions: list[str] | None = None) -> Path:
    """verl's RL format, as its GSM8K preprocessing writes it: `prompt` = chat messages, `data_source`,
    `ability`, `reward_model` {style, ground_truth}, `extra_info` (here with each row's mode)."""
    import pandas as pd

    records = []
    for i, row in enumerate(gsm8k_rows(count)):
        records.append({
            "data_source": "openai/gsm8k",
            "prompt": [{"role": "system", "content": VERL_SYSTEM}, {"role": "user", "content": row["question"]}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": row["gold"]},
            "extra_info": {"split": "train", "index": i, "answer": row["answer"],
                           "mode": "reasoning" if i % 2 else "non_reasoning"},
            **({"completion": completions[i]} if completions else {}),
        })
    pd.DataFrame(records).to_parquet(path)
    return path


def trl_messages_jsonl(path: Path, count: int = 6, completions: list[str] | None = None,
                       modes: list[str] | None = None) -> Path:
    """TRL's conversational prompt-only format: `prompt` = messages with a system prompt, the answer in
    `solution` (as trl.rewards.accuracy_reward reads it); no mode."""
    with path.open("w") as f:
        for i, row in enumerate(gsm8k_rows(count)):
            record = {"prompt": [{"role": "system", "content": TRL_SYSTEM}, {"role": "user", "content": row["question"]}],
                      "solution": row["gold"]}
            if completions:
                record["completion"] = completions[i]
            if modes:
                record["mode"] = modes[i]
            f.write(json.dumps(record) + "\n")
    return path
