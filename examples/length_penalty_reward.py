"""A TRL-style reward plug-in: shorter answers score higher.

TRL convention: `f(completions, **columns) -> list[float | None]`. `completions` is the batch of
generated texts; every dataset column (here `mode`, `answer`, ...) arrives as a keyword argument
holding one value per completion. Return one float per completion, or None for "cannot score"
(counted as 0 and logged as an error).

Use it with `rewards.rewards=[{name: examples/length_penalty_reward.py:length_penalty, weight: 0.2}]`.
"""

MAX_CHARS = {"reasoning": 2000, "non_reasoning": 400}  # beyond this many characters the reward is 0


def length_penalty(completions, mode, **columns):
    return [max(0.0, 1.0 - len(text) / MAX_CHARS[m]) for text, m in zip(completions, mode)]
