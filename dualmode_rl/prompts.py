"""A dataset row's prompt as chat messages: the one row path of rollout, filter, training, eval and rewards.

A row's `prompt` is a string (the user message) or a list of chat messages (`{"role", "content"}`,
as in verl's RL parquet and TRL's conversational datasets: a system prompt, earlier turns). A `system`
column, when a row has one, is put first. The messages are rendered by the tokenizer's chat template
(rollout.modes.render_prompt_ids) and handed to TRL-style rewards as `prompts`.

This module imports none of the project's packages, so all five can use it.
"""
from __future__ import annotations

from typing import Any

Message = dict[str, Any]  # {"role": "system" | "user" | "assistant" | "tool", "content": str, ...}
ROLES = ("system", "user", "assistant", "tool")
PROMPT_COLUMNS = ("prompt", "system")  # the columns prompt_messages reads


class PromptError(ValueError):
    """Why a row's prompt cannot be rendered; callers add the source and the row number."""


def prompt_messages(row: dict) -> list[Message]:
    """The row's chat so far: its `system` column (if any), then its `prompt` as messages. A prompt must
    end with a user (or tool) turn: the model answers it."""
    prompt, system = row.get("prompt"), row.get("system")
    if isinstance(prompt, str):
        if not prompt.strip():
            raise PromptError("'prompt' is an empty string")
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, (list, tuple)) and prompt:
        messages = [_message(m, number) for number, m in enumerate(prompt, 1)]
    else:
        raise PromptError(f"'prompt' must be a non-empty string or a list of chat messages, got {prompt!r:.80}")
    if system is not None:
        if not isinstance(system, str):
            raise PromptError(f"'system' must be a string, got {type(system).__name__}")
        if messages[0]["role"] == "system":
            raise PromptError("the row has both a 'system' column and a system message in 'prompt'")
        messages.insert(0, {"role": "system", "content": system})
    if messages[-1]["role"] not in ("user", "tool"):
        raise PromptError(f"'prompt' ends with the {messages[-1]['role']}'s message; it must end with the user's "
                          "(or a tool's) turn, which the model answers")
    return messages


def _message(message, number: int) -> Message:
    """A chat message, without the keys a columnar format fills with None for messages that lack them."""
    if not isinstance(message, dict):
        raise PromptError(f"'prompt' message {number} is a {type(message).__name__}, not a {{role, content}} mapping")
    message = {k: v for k, v in message.items() if v is not None}
    if message.get("role") not in ROLES:
        raise PromptError(f"'prompt' message {number} has role {message.get('role')!r}, expected one of {ROLES}")
    if not isinstance(message.get("content"), str):
        raise PromptError(f"'prompt' message {number} ({message['role']}) has no string 'content'")
    return message
