"""Rewards installed as a package and found through the `dualmode_rl.rewards` entry point group."""


def short_answer(completions, **columns):
    """TRL convention: 1.0 when the final answer (after any </think>) is at most 80 characters."""
    return [1.0 if len(text.rsplit("</think>", 1)[-1].strip()) <= 80 else 0.0 for text in completions]
