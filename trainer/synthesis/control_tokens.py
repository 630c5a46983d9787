"""Chat-template control tokens inside training text: refused, or escaped so they tokenize as plain text.

A tokenizer matches its added tokens anywhere in the rendered chat, so `<|im_end|>` inside a message would end the
turn for real and `<|im_start|>assistant` would open a forged, supervised one. The strings refused are the ChatML
family `<|…|>` (Qwen's `<|im_start|>`, `<|im_end|>`, `<|endoftext|>`, `<|fim_prefix|>`, Llama 3's `<|eot_id|>`, …)
and the tags Qwen 2.5's template wraps tool calls and results in. Escaping puts a zero-width space after the `<`:
the text reads the same and no longer matches a token.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainer.data_config import DataConfig
    from trainer.synthesis.generate import Generated

CONTROL_TOKEN = re.compile(r"<\|[A-Za-z0-9_.:-]{1,64}\|>|</?tool_call>|</?tool_response>")
ESCAPE = "\u200b"


class ControlTokenError(ValueError):
    """Text holds a control token and escaping is off; the message says where."""


def find_control_token(value: Any, where: str) -> tuple[str, str] | None:
    """(where it is, the token) for the first control token in any string or key of a JSON value, else None."""
    pending = [(where, value)]
    while pending:  # a loop, not recursion: JSON nested 100,000 deep is refused earlier, but cheap to be safe
        path, item = pending.pop()
        if isinstance(item, str):
            if found := CONTROL_TOKEN.search(item):
                return path, found.group()
        elif isinstance(item, dict):
            for key, inner in reversed(item.items()):
                if found := CONTROL_TOKEN.search(key):
                    return f"{path} key", found.group()
                pending.append((f"{path}.{key}" if path else key, inner))
        elif isinstance(item, list):
            pending.extend((f"{path}[{index}]", inner) for index, inner in reversed(list(enumerate(item))))
    return None


def escape_control_tokens(value: Any) -> Any:
    """A copy of a JSON value whose strings and keys have every control token escaped. Done on the JSON text: a
    token's characters need no JSON escaping and hold no quote, so every match lies inside one string."""
    text = json.dumps(value, ensure_ascii=False)
    return json.loads(CONTROL_TOKEN.sub(lambda found: "<" + ESCAPE + found.group()[1:], text))


def screen(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, escape: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, str | None]:
    """(messages, tools, note): unchanged with note None when they hold no control token; else, with `escape`, the
    escaped copies and a note saying where; else ControlTokenError naming where and which token."""
    found = find_control_token({"messages": messages, "tools": tools}, "")
    if found is None:
        return messages, tools, None
    path, token = found
    if not escape:
        raise ControlTokenError(
            f"{path} holds the chat control token {token!r}, which would be tokenized as the real token "
            "(data.escape_control_tokens=true escapes it as text)"
        )
    note = f"chat control token {token!r} in {path} escaped"
    return escape_control_tokens(messages), escape_control_tokens(tools), note


def screen_generated(items: list[Generated], data: DataConfig, records: list[str]) -> list[Generated]:
    """Conversations generated from Go sources (a doc comment is text anyone can write), screened like hand-written
    ones: refused ones are left out, and each refused or escaped one is recorded as `source:file:line: reason`."""
    kept = []
    for item in items:
        where = f"{item.provenance['source']}:{item.provenance['file']}:{item.provenance['line']}"
        try:
            item.messages, item.tools, note = screen(item.messages, item.tools, data.escape_control_tokens)
        except ControlTokenError as exc:
            records.append(f"{where}: {exc}; conversation left out")
            continue
        records.extend([f"{where}: {note}"] if note else [])
        kept.append(item)
    return kept
