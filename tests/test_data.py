"""Prompt data: bad input is an error naming the file and row."""
import json

import pytest

from dualmode_rl.orchestration.config import load_config
from dualmode_rl.orchestration.data import DataError, load_prompts


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bad_mode_names_file_and_row(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "mode": "reasoning"}, {"prompt": "b", "mode": "thinking"}])
    with pytest.raises(DataError, match=r"p\.jsonl: row 2: mode 'thinking'"):
        load_prompts(load_config(), path, "train")


def test_missing_column_and_missing_file(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "a", "mode": "reasoning"}])
    with pytest.raises(DataError, match=r"q\.jsonl: missing column\(s\) \['prompt'\]"):
        load_prompts(load_config(), path, "train")
    with pytest.raises(DataError, match="no such dataset"):
        load_prompts(load_config(), tmp_path / "absent", "train")


def test_mode_mix_assigns_modes(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"prompt": f"p{i}"} for i in range(200)])
    data = load_prompts(load_config(None, ["data.reasoning_share=0.25"]), path, "train")
    share = sum(m == "reasoning" for m in data["mode"]) / len(data)
    assert 0.15 < share < 0.35


def test_rows_get_their_number_as_id_unless_they_have_one(tmp_path):
    numbered = load_prompts(load_config(), write_jsonl(tmp_path / "n.jsonl", [{"prompt": "a", "mode": "reasoning"}] * 3), "train")
    assert numbered["id"] == [1, 2, 3]
    named = load_prompts(load_config(), write_jsonl(tmp_path / "i.jsonl", [{"prompt": "a", "mode": "reasoning", "id": "q7"}]),
                         "train")
    assert named["id"] == ["q7"]
