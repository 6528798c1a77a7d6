import pytest

from dualmode_rl.rewards.format import FormatReward, split_answer
from dualmode_rl.rewards.types import RewardInput


@pytest.mark.parametrize("completion,mode,answer,error", [
    ("think a bit\n</think>\n\nThe answer is 4[|endofturn|]", "reasoning", "The answer is 4", None),
    ("a</think>b</think>\n\nfinal", "reasoning", "final", None),
    ("still thinking, never closed", "reasoning", None, "unclosed think"),
    ("x</think>\n\nanswer <think>more", "reasoning", None, "think block opened after </think>"),
    ("The answer is 4\n[|endofturn|]\ngarbage</think>", "non_reasoning", "The answer is 4", None),
    ("<think>\nsneaky\n</think>\n\n4", "non_reasoning", None, "think tag in a non-reasoning answer"),
    ("4 </think>", "non_reasoning", None, "think tag in a non-reasoning answer"),
    ("4", "chat", None, "unknown mode 'chat' (expected one of ('reasoning', 'non_reasoning'))"),
])
def test_split_answer(completion, mode, answer, error):
    assert split_answer(completion, mode) == (answer, error)


def test_format_reward_scores_and_reports():
    out = FormatReward()([RewardInput("r</think>\n\n42", "reasoning", {}),
                          RewardInput("no close", "reasoning", {}),
                          RewardInput("r</think>\n\n", "reasoning", {})])
    assert [o.score for o in out] == [1.0, 0.0, 0.0]
    assert [o.reason for o in out] == [None, "unclosed think", "empty answer"] and not any(o.error for o in out)


def test_arithmetic_steps_reward_checks_every_shown_step_not_the_answer():
    from dualmode_rl.rewards.registry import load_reward

    reward = load_reward("arithmetic_steps")
    lucky = "10+1=12\n12*2=22\n</think>\n\nThe answer is \\boxed{22}."  # right answer, wrong steps
    sound = "10+1=11\n11*2=22\n</think>\n\nThe answer is \\boxed{22}."
    wrong_answer = "10+1=11\n11*2=22\n</think>\n\nThe answer is \\boxed{23}."  # steps right: scored 1
    division = "12/4=3\n7/2=3\n</think>\n\n3"
    no_steps = "I just know it\n</think>\n\n5"
    unfinished = "4-2=\n</think>\n\nThe answer is \\boxed{2}."  # dodges a check that skips what it cannot parse
    out = reward([RewardInput(t, "reasoning", {}) for t in (lucky, sound, wrong_answer, division, no_steps, unfinished)]
                 + [RewardInput("10+1=12", "non_reasoning", {})])
    assert [o.score for o in out] == [0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert out[0].extras["wrong_step"] == "10+1=12" and out[3].extras["wrong_step"] == "7/2=3"
    assert out[5].extras["wrong_step"] == "4-2="
    assert all(o.error is None for o in out)
