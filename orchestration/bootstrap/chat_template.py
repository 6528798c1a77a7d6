"""The EXAONE 4.0 chat format as a Jinja chat template (see DESIGN.md, "Modes").

Reasoning is kept only in assistant turns after the last user turn; earlier assistant turns get the
empty think block. The mode is switched by `enable_thinking` alone (default False, as in EXAONE 4.0).
An assistant message may carry its reasoning in `reasoning_content` or inline as `<think>...</think>`.
"""

from dualmode_rl.rewards.format import END_OF_TURN, THINK_CLOSE, THINK_OPEN

ROLE_TOKENS = ("[|system|]", "[|user|]", "[|assistant|]", "[|tool|]")
__all__ = ["CHAT_TEMPLATE", "END_OF_TURN", "ROLE_TOKENS", "THINK_CLOSE", "THINK_OPEN"]

CHAT_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "{%- set content = m['content'] or '' -%}"
    "{%- set reasoning = m.get('reasoning_content') or '' -%}"
    "{%- if '" + THINK_CLOSE + "' in content -%}"
    "{%- set reasoning = content.split('" + THINK_CLOSE + "')[0].split('" + THINK_OPEN + "')[-1].strip('\\n') -%}"
    "{%- set content = content.split('" + THINK_CLOSE + "')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{{- '[|assistant|]\\n" + THINK_OPEN + "\\n' -}}"
    "{%- if loop.index0 > ns.last_user and reasoning -%}{{- reasoning + '\\n' -}}{%- endif -%}"
    "{{- '\\n" + THINK_CLOSE + "\\n\\n' if not (loop.index0 > ns.last_user and reasoning) else '" + THINK_CLOSE + "\\n\\n' -}}"
    "{{- content + '" + END_OF_TURN + "\\n' -}}"
    "{%- else -%}"
    "{{- '[|' + m['role'] + '|]\\n' + m['content'] + '" + END_OF_TURN + "\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '[|assistant|]\\n" + THINK_OPEN + "\\n' -}}"
    "{%- if not enable_thinking is defined or not enable_thinking -%}{{- '\\n" + THINK_CLOSE + "\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)
