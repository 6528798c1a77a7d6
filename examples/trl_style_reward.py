"""A TRL-style reward plug-in in TRL's conversational format: does the answer mention the question's first word?

With `completion_format: messages` (in its `rewards.rewards` entry, or `dualmode-rl verify
--completion-format messages`) a TRL-style reward gets what TRL's GRPOTrainer hands it for chat data:
`prompts` as chat messages (the system prompt and earlier turns included) and `completions` as
`[{"role": "assistant", "content": ...}]`, plus `completion_ids` and every dataset column. Return one
float per completion, or None for "cannot score".

Use it with `rewards.rewards=[{name: examples/trl_style_reward.py:answered_the_question, completion_format: messages}]`.
"""


def answered_the_question(prompts, completions, **columns):
    return [float(question[-1]["content"].split()[0].lower() in answer[0]["content"].lower())
            for question, answer in zip(prompts, completions)]
