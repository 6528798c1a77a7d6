"""The EXAONE 4.0 chat format as a Jinja chat template (see DESIGN.md, "Modes").

Reasoning is kept only in assistant turns after the last user turn; earlier assistant turns get the
empty think block. The mode is switched by `enable_thinking` alone (default False, as in EXAONE 4.0).
An assistant message may carry its reasoning in `reasoning_content` or inline as `<think>...</think>`.
"""

ROLE_TOKENS = ("[|system|]", "[|user|]", "[|assistant|]", "[|tool|]")
END_OF_TURN = "[|endofturn|]"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

CHAT_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "{%- set content = m['content'] or '' -%}"
    "{%- set reasoning = m.get('reasoning_content') or '' -%}"
    "{%- if '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{{- '[|assistant|]\\n<think>\\n' -}}"
    "{%- if loop.index0 > ns.last_user and reasoning -%}{{- reasoning + '\\n' -}}{%- endif -%}"
    "{{- '\\n</think>\\n\\n' if not (loop.index0 > ns.last_user and reasoning) else '</think>\\n\\n' -}}"
    "{{- content + '[|endofturn|]\\n' -}}"
    "{%- else -%}"
    "{{- '[|' + m['role'] + '|]\\n' + m['content'] + '[|endofturn|]\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '[|assistant|]\\n<think>\\n' -}}"
    "{%- if not enable_thinking is defined or not enable_thinking -%}{{- '\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)
