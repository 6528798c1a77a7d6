"""The built-in checkpoint: disjoint splits, 1.5:1 mode ratio, one token per number, the same weights from
the same seed, loads in transformers and vLLM alike."""
import importlib.util
import json
import re
from pathlib import Path

import process_scan
import pytest
import torch
from datasets import load_from_disk
from transformers import AutoModelForCausalLM, AutoTokenizer

from dualmode_rl.orchestration.bootstrap.sft import UNWORKED_THOUGHT, sft_example, sft_reasoning
from dualmode_rl.orchestration.bootstrap.tasks import generate_tasks, task_rows
from dualmode_rl.orchestration.bootstrap.tokenizer import train_tokenizer
from dualmode_rl.rollout.types import GenerationRequest


def test_task_splits_are_disjoint_and_sized():
    splits = generate_tasks({"train": 400, "validation": 50, "test": 60}, code_share=0.3, seed=1, max_operand=12)
    assert {k: len(v) for k, v in splits.items()} == {"train": 400, "validation": 50, "test": 60}
    prompts = [{t.prompt for t in tasks} for tasks in splits.values()]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])
    assert sum(t.domain == "code" for t in splits["test"]) == 18
    again = generate_tasks({"train": 400, "validation": 50, "test": 60}, code_share=0.3, seed=1, max_operand=12)
    assert [t.prompt for t in again["test"]] == [t.prompt for t in splits["test"]]


def test_math_tasks_are_consistent():
    for task in generate_tasks({"train": 200}, code_share=0.0, seed=3, max_operand=12)["train"]:
        value = None
        for line in task.reasoning.splitlines():  # each step "a op b=c" is right and chains
            lhs, rhs = line.split("=")
            assert eval(lhs) == int(rhs)  # our own generated arithmetic
            value = int(rhs)
        assert str(value) == task.answer and f"\\boxed{{{value}}}" in task.solution


def test_math_tasks_keep_their_numbers_within_max_operand():
    tasks = generate_tasks({"train": 300}, code_share=0.0, seed=4, max_operand=5)["train"]
    for task in tasks:
        assert 2 <= int(re.findall(r"\d+", task.prompt)[0]) <= 5
        for line in task.reasoning.splitlines():
            a, op, b = re.match(r"(\d+)([-+*])(\d+)=", line).groups()
            assert (op == "+" and 1 <= int(b) <= 5) or (op == "-" and int(b) < int(a)) or (op == "*" and int(a) <= 5)
    assert {t.steps for t in tasks} == {1, 2, 3}


def test_each_number_of_the_task_suite_is_one_token():
    rows = task_rows(generate_tasks({"train": 300}, code_share=0.3, seed=2, max_operand=12)["train"])
    corpus = [f"{r['prompt']}\n{r['reasoning']}\n{r['solution']}\n{r['test']}" for r in rows]
    whole = train_tokenizer(corpus, vocab_size=768)
    numbers = {n for text in corpus for n in re.findall(r"\d+", text)}
    assert [n for n in numbers if whole.tokenize(n) != [n]] == []
    assert whole.tokenize("12+11=23") == ["12", "+", "11", "=", "23"]
    digits = train_tokenizer(corpus, vocab_size=768, numbers="digits")
    assert digits.tokenize("12+11=23") == ["1", "2", "+", "1", "1", "=", "2", "3"]


def test_checkpoint_folder(tiny_checkpoint):
    info = json.loads((tiny_checkpoint / "bootstrap.json").read_text())
    assert info["sft"]["steps"] == 30
    data = load_from_disk(str(tiny_checkpoint / "data"))
    assert set(data) == {"train", "validation", "test"}
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["architectures"] == ["Exaone4ForCausalLM"]
    assert config["layer_types"] == ["sliding_attention"] * 3 + ["full_attention"]
    train = data["train"]
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    tokens = {"reasoning": 0, "non_reasoning": 0}
    for row in train:
        tokens[row["mode"]] += len(tok(row["prompt"] + sft_reasoning(row) * (row["mode"] == "reasoning") + row["solution"])["input_ids"])
    assert 1.2 < tokens["reasoning"] / tokens["non_reasoning"] < 1.8  # 1.5:1 counted on full renders
    math_rows = [row for row in train if row["domain"] == "math"]
    unworked = sum(not row["worked"] for row in math_rows) / len(math_rows)
    assert 0.4 < unworked < 0.6  # unworked_share 0.5
    assert all(row["worked"] for split in ("validation", "test") for row in data[split])
    assert all(row["worked"] for row in train if row["domain"] == "code")


def test_a_checkpoint_is_reused_only_when_built_with_the_same_settings(tiny_checkpoint):
    from dualmode_rl.orchestration.bootstrap import is_bootstrapped
    from conftest import tiny_bootstrap_config

    cfg = tiny_bootstrap_config()
    assert is_bootstrapped(tiny_checkpoint, cfg)
    assert is_bootstrapped(tiny_checkpoint, cfg.model_copy(update={"torch_threads": 2, "out": "elsewhere"}))
    assert not is_bootstrapped(tiny_checkpoint, cfg.model_copy(update={"unworked_share": 0.1}))
    assert not is_bootstrapped(tiny_checkpoint.parent / "missing", cfg)


def test_the_same_seed_builds_the_same_weights(tiny_checkpoint, tmp_path):
    from conftest import tiny_bootstrap_config

    from dualmode_rl.orchestration.bootstrap import bootstrap

    again = bootstrap(tiny_bootstrap_config(), tmp_path / "again")  # same settings and thread count as the fixture
    for name in ("model.safetensors", "tokenizer.json"):
        assert (again / name).read_bytes() == (tiny_checkpoint / name).read_bytes(), name


def _benchmark(name: str):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_worked_answers_tells_unworked_misread_and_false_steps_apart():
    classify = _benchmark("worked_answers").classify
    gold = "4+8=12\n12*2=24"
    answer = "</think>\n\nThe answer is \\boxed{24}."
    assert classify("4+8=12\n12*2=24\n" + answer, gold) == "steps_ok"
    assert classify("4+8=13\n13*2=26\n" + answer, gold) == "arithmetic"  # a false result, carried on right
    assert classify("4+8=12\n12*2=25\n" + answer, gold) == "arithmetic"
    assert classify("4+9=13\n13*2=26\n" + answer, gold) == "misread"  # an operand the problem does not give
    assert classify("4+8=12\n12+2=14\n" + answer, gold) == "misread"  # the wrong operation
    assert classify("4+8=12\n" + answer, gold) == "misread"  # a step left out
    assert classify("I can answer this directly.\n" + answer, gold) == "unworked"
    assert classify("4+8=12\n12*2=24", gold) == "unclosed"


def test_unworked_rows_show_no_steps_in_their_think_block():
    worked = {"prompt": "Ana has 2 pens. Ana finds 3 more.", "reasoning": "2+3=5", "solution": "The answer is \\boxed{5}.",
              "worked": True}
    unworked = dict(worked, worked=False)
    assert sft_example(worked, "reasoning")["completion"][0]["reasoning_content"] == "2+3=5"
    assert sft_example(unworked, "reasoning")["completion"][0]["reasoning_content"] == UNWORKED_THOUGHT
    assert "reasoning_content" not in sft_example(unworked, "non_reasoning")["completion"][0]
    assert sft_example(unworked, "reasoning")["completion"][0]["content"] == worked["solution"]


@pytest.mark.slow
def test_transformers_and_vllm_greedy_outputs_match(tiny_checkpoint):
    from dualmode_rl.rollout.vllm_engine import VllmEngine
    from dualmode_rl.rollout.modes import ModeSampling, SamplingConfig

    rows = load_from_disk(str(tiny_checkpoint / "data"))["test"].select(range(6))
    requests = [GenerationRequest(f"{i}:{m}", r["prompt"], m) for i, r in enumerate(rows) for m in ("reasoning", "non_reasoning")]
    sampling = SamplingConfig(reasoning=ModeSampling(0.6, 0.95, 24), non_reasoning=ModeSampling(0.4, 0.95, 24))
    before = {p.pid for p in process_scan.children()}
    engine = VllmEngine(str(tiny_checkpoint), sampling=sampling, max_model_len=256, in_process=False)  # its reaping too
    try:
        engine_processes = {p.pid for p in process_scan.children()} - before
        vllm_out = [g.samples[0].token_ids for g in engine.generate_greedy(requests)]
        prompts = [g.prompt_token_ids for g in engine.generate_greedy(requests)]
    finally:
        engine.shutdown()
    # shutting down reaps the engine's processes (vLLM SIGKILLs a slow engine core and leaves it a zombie)
    assert engine_processes and [p for p in process_scan.children()
                                 if p.pid in engine_processes and (p.zombie or "VLLM" in p.cmdline)] == []
    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32).eval()
    for prompt, expected in zip(prompts, vllm_out):
        out = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        assert out[0, len(prompt):].tolist() == expected  # both keep the end-of-sequence token
