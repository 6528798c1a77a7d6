"""A verl-style reward plug-in: exact match of the last \\boxed{...} answer.

verl convention: `compute_score(data_source, solution_str, ground_truth, extra_info=None)`, called
once per completion. dualmode-rl passes the row's `data_source` column, the raw completion, the row's
`answer` column as `ground_truth`, and the whole row plus `mode` as `extra_info`. Return a float,
or a dict with a `score` key; the other keys are logged as extra metrics.

Use it with `rewards.rewards=[{name: examples/verl_style_reward.py:compute_score}]`.
"""
import re

BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    answer_part = solution_str.rsplit("</think>", 1)[-1]  # grade the answer, not the reasoning
    found = BOXED.findall(answer_part)
    correct = bool(found) and found[-1].strip() == str(ground_truth).strip()
    return {"score": 1.0 if correct else 0.0, "has_boxed": float(bool(found))}
