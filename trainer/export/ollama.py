"""An Ollama `Modelfile` beside each GGUF: the chat format in Ollama's Go template syntax, its stop tokens, the
system prompt, and greedy decoding.

Ollama does not run the Jinja chat template; it runs a Go `text/template` over `.System` (the request's system
messages, or the Modelfile's `SYSTEM` when it has none) and `.Messages`. The template per chat format is written
here by hand and tested against the model's own Jinja template with Go's `text/template` (tests/test_gguf.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.errors import TrainerError

MODELFILE = "{stem}.Modelfile"  # beside `{stem}.gguf`: `ollama create NAME -f model-f16.Modelfile`
PROBE = "PROBE-USER-TEXT"


@dataclass(frozen=True)
class ChatFormat:
    name: str
    marker: str  # in every Jinja template of this format, and in none of another's
    end_of_turn: str
    go_template: str


CHATML_TEMPLATE = """\
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "assistant") }}<|im_start|>{{ .Role }}
{{ .Content }}{{ if or (not $last) (ne .Role "assistant") }}<|im_end|>
{{ end }}
{{- end }}
{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant
{{ end }}
{{- end }}"""

CHAT_FORMATS = (ChatFormat("chatml", "<|im_start|>", "<|im_end|>", CHATML_TEMPLATE),)


def chat_format(jinja_template: str) -> ChatFormat:
    for candidate in CHAT_FORMATS:
        if candidate.marker in jinja_template:
            return candidate
    raise TrainerError(
        "GGUF export: the chat template is none of the formats with an Ollama template here "
        f"({', '.join(f.name for f in CHAT_FORMATS)}); its first line: {jinja_template.strip().splitlines()[0][:80]}"
    )


def default_system_prompt(tokenizer: Any) -> str | None:
    """The system prompt the Jinja template inserts when a conversation has none (Qwen 2.5's, SmolLM2's)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": PROBE}], tokenize=False)
    head = "<|im_start|>system\n"
    if not text.startswith(head) or PROBE not in text.split("<|im_end|>", 1)[1]:
        return None
    return text[len(head) :].split("<|im_end|>", 1)[0]


def trained_system_prompt(rows: list[list[dict[str, Any]]]) -> str | None:
    """The one system message every training conversation opens with, if there is one."""
    prompts = {m[0]["content"] if m and m[0]["role"] == "system" else None for m in rows}
    return prompts.pop() if len(prompts) == 1 else None


def _quoted(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile(gguf_name: str, tokenizer: Any, stop_ids: list[int], system: str | None) -> str:
    """The Modelfile text for `gguf_name` (a file in the same folder)."""
    template = tokenizer.chat_template
    fmt = chat_format(template)
    system = system if system is not None else default_system_prompt(tokenizer)
    stops = dict.fromkeys([fmt.end_of_turn, *tokenizer.convert_ids_to_tokens(stop_ids)])
    lines = [
        f"# {fmt.name} chat format; greedy decoding, as the export was verified",
        f"FROM ./{gguf_name}",
        f"TEMPLATE {_quoted(fmt.go_template)}",
        *([f"SYSTEM {_quoted(system)}"] if system else []),
        *(f"PARAMETER stop {json.dumps(stop)}" for stop in stops),
        "PARAMETER temperature 0",
        "PARAMETER top_k 1",
        "PARAMETER repeat_penalty 1",  # Ollama's default 1.1 would move greedy answers off the model's own
    ]
    return "\n".join(lines) + "\n"


def write_modelfile(gguf_file: Path, tokenizer: Any, stop_ids: list[int], system: str | None) -> Path:
    path = gguf_file.with_name(MODELFILE.format(stem=gguf_file.stem))
    path.write_text(modelfile(gguf_file.name, tokenizer, stop_ids, system), encoding="utf-8")
    return path
