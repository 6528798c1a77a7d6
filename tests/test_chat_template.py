"""Both modes render exactly as DESIGN.md gives; earlier reasoning is stripped."""
import pytest

from dualmode_rl.orchestration.bootstrap.tokenizer import train_tokenizer

CORPUS = ["Tom has 5 apples. He buys 3 more.", "def f(x):\n    return 3*x+1\n"] * 20
HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "<think>\nold reasoning\n</think>\n\nA1"},
    {"role": "user", "content": "Q2"},
]
PREFIX = (
    "[|system|]\nBe brief.[|endofturn|]\n[|user|]\nQ1[|endofturn|]\n"
    "[|assistant|]\n<think>\n\n</think>\n\nA1[|endofturn|]\n[|user|]\nQ2[|endofturn|]\n"
)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=300)


def render(tok, messages, **kwargs):
    return tok.apply_chat_template(messages, tokenize=False, **kwargs)


def test_reasoning_generation_prompt(tokenizer):
    assert render(tokenizer, HISTORY, add_generation_prompt=True, enable_thinking=True) == PREFIX + "[|assistant|]\n<think>\n"


def test_non_reasoning_generation_prompt_is_the_default(tokenizer):
    expected = PREFIX + "[|assistant|]\n<think>\n\n</think>\n\n"
    assert render(tokenizer, HISTORY, add_generation_prompt=True, enable_thinking=False) == expected
    assert render(tokenizer, HISTORY, add_generation_prompt=True) == expected


@pytest.mark.parametrize("final", [
    {"role": "assistant", "content": "A2", "reasoning_content": "step 1\nstep 2"},
    {"role": "assistant", "content": "<think>\nstep 1\nstep 2\n</think>\n\nA2"},
])
def test_last_turn_keeps_reasoning_earlier_turns_lose_it(tokenizer, final):
    text = render(tokenizer, HISTORY + [final])
    assert text == PREFIX + "[|assistant|]\n<think>\nstep 1\nstep 2\n</think>\n\nA2[|endofturn|]\n"
    assert "old reasoning" not in text


def test_completion_continues_the_generation_prompt(tokenizer):
    """SFT relies on prompt render + completion == full render, in both modes."""
    for thinking, final in [(True, {"role": "assistant", "content": "A", "reasoning_content": "R"}),
                            (False, {"role": "assistant", "content": "A"})]:
        prompt = render(tokenizer, HISTORY, add_generation_prompt=True, enable_thinking=thinking)
        full = render(tokenizer, HISTORY + [final], enable_thinking=thinking)
        assert full.startswith(prompt), (thinking, prompt, full)


def test_special_tokens_are_atomic_and_think_tags_survive_decoding(tokenizer):
    text = "[|user|]\nx 12[|endofturn|]\n<think>\n</think>\n\n"
    ids = tokenizer(text)["input_ids"]
    for token in ("[|user|]", "[|endofturn|]", "<think>", "</think>"):
        assert tokenizer.convert_tokens_to_ids(token) in ids
    assert tokenizer.decode(ids) == text
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert "<think>" in decoded and "</think>" in decoded and "[|user|]" not in decoded
    assert [tokenizer.decode([i]) for i in tokenizer("123")["input_ids"]] == ["1", "2", "3"]
