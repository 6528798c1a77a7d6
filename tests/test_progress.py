"""The progress bars' text: reward per mode after each RL step, accuracy per mode during eval."""
from dualmode_rl.orchestration.progress import per_mode, step_postfix


def test_step_postfix_shows_each_modes_reward_in_mode_order():
    metrics = {"non_reasoning/reward": 0.3, "reasoning/reward": 0.41249, "reasoning/accuracy": 0.9, "loss": -1.0}
    assert step_postfix(metrics) == "reward: reasoning 0.412, non_reasoning 0.300"
    assert step_postfix({"non_reasoning/reward": 1.0}) == "reward: non_reasoning 1.000"  # a step of one mode
    assert step_postfix({"loss": 0.5}) == ""


def test_per_mode_ignores_unknown_keys():
    assert per_mode({"reasoning": 0.5, "other": 0.25}) == "reasoning 0.500"
