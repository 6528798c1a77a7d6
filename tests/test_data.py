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


def test_verl_parquet_loads_as_it_is(tmp_path):
    """verl's RL parquet: messages prompt (with its system prompt), the gold answer from
    reward_model.ground_truth, the domain from ability, the mode from extra_info."""
    from ecosystem_data import VERL_SYSTEM, gsm8k_rows, verl_parquet

    from dualmode_rl.orchestration.data import request_for

    data = load_prompts(load_config(), verl_parquet(tmp_path / "gsm8k.parquet", count=4), "train")
    golds = [r["gold"] for r in gsm8k_rows(4)]
    assert data["answer"] == golds and data["domain"] == ["math"] * 4 and data["id"] == [1, 2, 3, 4]
    assert data["mode"] == ["non_reasoning", "reasoning"] * 2
    assert data[0]["reward_model"]["ground_truth"] == golds[0]  # the row keeps its own columns
    messages = request_for(data[1]).messages
    assert messages[0] == {"role": "system", "content": VERL_SYSTEM} and messages[1]["role"] == "user"


def test_trl_dataset_with_renamed_answer_and_drawn_modes(tmp_path):
    """TRL's prompt-only format: messages prompts, the answer under another name (data.columns), no mode
    (data.reasoning_share draws them); a string prompt with a `system` column renders the same system turn."""
    from ecosystem_data import TRL_SYSTEM, gsm8k_rows, trl_messages_jsonl

    from dualmode_rl.orchestration.data import request_for

    cfg = load_config(None, ["data.columns={answer: solution}", "data.reasoning_share=0.5"])
    data = load_prompts(cfg, trl_messages_jsonl(tmp_path / "trl.jsonl", count=6), "train")
    assert data["answer"] == [r["gold"] for r in gsm8k_rows(6)] and "solution" not in data.column_names
    assert set(data["mode"]) <= {"reasoning", "non_reasoning"}
    strings = write_jsonl(tmp_path / "s.jsonl", [{"prompt": r["question"], "system": TRL_SYSTEM, "solution": r["gold"],
                                                  "mode": "reasoning"} for r in gsm8k_rows(2)])
    plain = load_prompts(load_config(None, ["data.columns={answer: solution}"]), strings, "train")
    assert request_for(plain[0]).messages == request_for(data[0]).messages


def test_no_mode_anywhere_is_an_error_naming_the_ways_to_give_one(tmp_path):
    path = write_jsonl(tmp_path / "nomode.jsonl", [{"prompt": "a"}])
    with pytest.raises(DataError, match=r"nomode\.jsonl: missing column\(s\) \['mode'\].*data\.reasoning_share"):
        load_prompts(load_config(), path, "train")
    with pytest.raises(DataError, match=r"data\.columns names column\(s\) \['solution'\]"):
        load_prompts(load_config(None, ["data.columns={answer: solution}"]), path, "train")


def test_a_bad_chat_prompt_names_its_row(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "mode": "reasoning"},
            {"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "mode": "reasoning"}]
    with pytest.raises(DataError, match=r"c\.jsonl: row 2: 'prompt' ends with the assistant's message"):
        load_prompts(load_config(), write_jsonl(tmp_path / "c.jsonl", rows), "train")


def test_hub_name_when_the_hub_is_unreachable_says_so(monkeypatch):
    """No machine here reaches the Hub; offline mode makes the same failure immediate (without it,
    huggingface_hub retries the request for ~25 s first)."""
    import datasets
    import huggingface_hub

    from dualmode_rl.orchestration.data import load_split

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError) as info:
        load_split("openai/gsm8k:main", "train")
    assert str(info.value).startswith("openai/gsm8k:main: no such local file or folder, and the Hugging Face Hub is "
                                      "not reachable from here")


def test_weighted_list_of_datasets(tmp_path):
    """[{path: a, weight: 2}, {path: b, weight: 1}]: every row of both comes up, a's twice as often as b's
    (interleave_datasets "all_exhausted": the draw stops when the last part is exhausted), b's string
    prompts become messages so the two line up, ids name their source."""
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": [{"role": "user", "content": f"a{i}"}], "mode": "reasoning",
                                            "answer": "1"} for i in range(40)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"b{i}", "mode": "non_reasoning", "extra": i} for i in range(40)])
    cfg = load_config(None, [f"data.train=[{{path: '{a}', weight: 2}}, {{path: '{b}', weight: 1}}]"])
    data = load_prompts(cfg, cfg.data.train, "train")
    texts = [p[-1]["content"] for p in data["prompt"]]
    from_a = [t for t in texts if t.startswith("a")]
    assert {f"a{i}" for i in range(40)} <= set(from_a) and {f"b{i}" for i in range(40)} <= set(texts)
    # the share of a: 2/3 in expectation; each draw is a Bernoulli(2/3), so over len(data) >= 120 draws
    # its standard deviation is at most sqrt(2/9 / 120) = 0.043: five of them is a bound that holds
    assert abs(len(from_a) / len(data) - 2 / 3) < 5 * (2 / 9 / len(data)) ** 0.5
    assert all(i.startswith((f"{a}:", f"{b}:")) for i in data["id"])
    row = next(r for r in data if r["prompt"][-1]["content"] == "b3")
    assert row["extra"] == 3 and row["answer"] is None and row["mode"] == "non_reasoning"
