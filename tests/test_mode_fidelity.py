"""Mode-fidelity flags on hand-written completions, the `mode_fidelity` reward, its per-step metrics and plot."""
import json

import pytest

from dualmode_rl.orchestration.metrics import MODE_FIDELITY_KEYS, rollout_metrics
from dualmode_rl.orchestration.report import write_report
from dualmode_rl.rewards.mode_fidelity import FLAGS_BY_MODE, mode_flags
from dualmode_rl.rewards.registry import load_reward
from dualmode_rl.rewards.types import RewardInput, RewardOutput
from dualmode_rl.rollout.types import RolloutGroup, Sample

CODE = "```python\ndef add(a, b):\n    return a + b\n```"
CASES = [  # completion, mode, flags raised
    ("4+1=5\n</think>\n\nThe answer is \\boxed{5}.[|endofturn|]", "reasoning", []),
    ("The answer is $\\boxed{5}$.", "non_reasoning", []),
    ("The answer is \\boxed{5} apples.\n", "non_reasoning", []),  # the rest of the answer's line is allowed
    (CODE + "\n", "non_reasoning", []),
    ("The answer is \\boxed{5}.[|endofturn|]\nWait, 4+1=5.", "non_reasoning", []),  # after the turn: not generated text
    ("I think 5 is about right", "non_reasoning", []),  # no recognisable final answer: never flagged as going on
    ("<think>\n4+1=5\n</think>\n\nThe answer is \\boxed{5}.", "non_reasoning", ["think_leak"]),
    ("The answer is \\boxed{5}.</think>", "non_reasoning", ["think_leak"]),
    ("The answer is \\boxed{5}.\nWait, let me check: 4+1=5.", "non_reasoning", ["think_leak"]),
    (CODE + "\nLet me check: add(1, 2) is 3", "non_reasoning", ["think_leak"]),
    ("r\n</think>\n\nThe answer is \\boxed{5}.\n\nHmm, 4+1=5, so", "reasoning", ["think_leak"]),
    ("r\n</think>\n\n\\boxed{5} <think>more", "reasoning", ["think_leak"]),
    ("4+1=5 and still thinking", "reasoning", ["think_unclosed"]),
    ("4+1=5 \\boxed{5}[|endofturn|]</think>", "reasoning", ["think_unclosed"]),  # closed only after the turn
    ("4+1=5\n</think>\n\n  \n[|endofturn|]", "reasoning", ["empty_answer"]),
    ("   ", "non_reasoning", ["empty_answer"]),
    ("<think>\n4+1=5\n</think>", "non_reasoning", ["think_leak"]),  # the answer segment is the whole turn
]


@pytest.mark.parametrize("completion,mode,raised", CASES)
def test_flags_of_hand_written_completions(completion, mode, raised):
    flags = mode_flags(completion, mode)
    assert flags.raised() == raised
    assert set(raised) <= set(FLAGS_BY_MODE[mode])


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="unknown mode 'chat'"):
        mode_flags("4", "chat")


def test_mode_fidelity_reward_is_a_built_in_and_scores_zero_on_any_flag():
    reward = load_reward("mode_fidelity")
    out = reward([RewardInput(c, m, {}) for c, m, _ in CASES])
    assert reward.name == "mode_fidelity"
    assert [o.score for o in out] == [0.0 if raised else 1.0 for _, _, raised in CASES]
    assert [o.extras.get("flags", "") for o in out] == [",".join(raised) for _, _, raised in CASES]
    assert all(o.error is None for o in out)


def test_accuracy_reward_still_grades_the_answer_segment_only():
    """A right answer after `</think>` counts even when the reasoning before it holds a wrong \\boxed{}."""
    math = load_reward("math")
    try:
        out = math([RewardInput("maybe \\boxed{4}\n</think>\n\nThe answer is \\boxed{5}.", "reasoning", {"answer": "5"}),
                    RewardInput("maybe \\boxed{5}\n</think>\n\nThe answer is \\boxed{4}.", "reasoning", {"answer": "5"})])
    finally:
        math.close()
    assert [o.score for o in out] == [1.0, 0.0]


def group(mode: str, texts: list[str]) -> RolloutGroup:
    return RolloutGroup("0", mode, [1], [Sample([2] * (i + 1), [-0.5] * (i + 1), t, "stop") for i, t in enumerate(texts)])


def test_rollout_metrics_log_each_flag_rate_per_mode():
    reasoning = ["r\n</think>\n\n\\boxed{1}", "unclosed", "r\n</think>\n\n", "r\n</think>\n\n\\boxed{1}\nso 2"]
    non_reasoning = ["\\boxed{1}", "<think>\nr\n</think>\n\n\\boxed{1}", " "]
    groups = [group("reasoning", reasoning), group("non_reasoning", non_reasoning)]
    logged = rollout_metrics(groups, [RewardOutput(0.0)] * 7)
    assert {k: v for k, v in logged.items() if k.startswith("mode_fidelity/")} == {
        "mode_fidelity/think_leak/reasoning": 1 / 4,
        "mode_fidelity/think_unclosed/reasoning": 1 / 4,
        "mode_fidelity/empty_answer/reasoning": 1 / 4,
        "mode_fidelity/think_leak/non_reasoning": 1 / 3,
        "mode_fidelity/empty_answer/non_reasoning": 1 / 3,
    }
    assert set(MODE_FIDELITY_KEYS) == {k for k in logged if k.startswith("mode_fidelity/")}
    assert logged["non_reasoning/response_length"] == 2.0


def test_report_plots_mode_fidelity_and_non_reasoning_length(tmp_path):
    rows = [{"step": s, "non_reasoning/response_length": 10.0 + s, "mode_fidelity/think_leak/non_reasoning": 0.1 * s,
             "mode_fidelity/think_unclosed/reasoning": 0.2} for s in range(1, 4)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = write_report(tmp_path).read_text()
    assert "![mode_fidelity](report_plots/mode_fidelity.png)" in text
    assert "![response_length](report_plots/response_length.png)" in text
    assert (tmp_path / "report_plots" / "mode_fidelity.png").stat().st_size > 1000
