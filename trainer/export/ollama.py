"""An Ollama `Modelfile` beside each GGUF: the chat format in Ollama's Go template syntax, its stop tokens, the
system prompt, and greedy decoding.

Ollama does not run the Jinja chat template; it runs a Go `text/template` over `.System` (the request's system
messages, or the Modelfile's `SYSTEM` when it has none) and `.Messages`. Each chat format here is the text around a
message's content per role; its Go template is built from those pieces, and so is `ChatFormat.render`, the same
rendering in Python. A template is given a format by its marker token and must then render a probe conversation
exactly as the format does (else the export refuses it by name): Llama 3.1's dated system header or a Mistral
variant without spaces around `[INST]` carry the same markers and would otherwise get a wrong Modelfile silently.
Tested with Go's own `text/template` against each family's Jinja template (tests/test_ollama.py).

Tools are not rendered: no Go template here reads `.Tools`, `.ToolCalls` or `tool` messages (see docs/export.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from trainer.errors import TrainerError, first_line

MODELFILE = "{stem}.Modelfile"  # beside `{stem}.gguf`: `ollama create NAME -f model-f16.Modelfile`
PROBE = "PROBE-USER-TEXT"
# The conversation a template must render as its format does: a system prompt, a finished exchange, a new question.
PROBE_CHAT = (
    {"role": "system", "content": "PROBE-SYSTEM-TEXT"},
    {"role": "user", "content": "PROBE-USER-1"},
    {"role": "assistant", "content": "PROBE-ASSISTANT-1"},
    {"role": "user", "content": PROBE},
)
# Ollama's `.System`: every system message of the chat, joined as Ollama joins them.
SYSTEM_JOIN = "\n\n"


@dataclass(frozen=True)
class ChatFormat:
    name: str
    marker: str  # in every Jinja template of this format, and in none of another's
    end_of_turn: str  # the special token that closes an assistant turn: generation stops on it
    user: tuple[str, str]  # the text before and after a user message's content
    assistant: tuple[str, str]  # the same for an assistant message (the last one is left open: Ollama continues it)
    generation: str  # what follows the last message when the model is to answer
    # A system turn's text before and after the prompt; None: the prompt opens the first user message, followed by a
    # blank line (Gemma's and Mistral's templates have no system turn).
    system: tuple[str, str] | None

    @property
    def go_template(self) -> str:
        """The Ollama TEMPLATE. `{{-` only follows an action, so no literal text of the format is trimmed."""
        if self.system:
            head = "{{- if .System }}" + self.system[0] + "{{ .System }}" + self.system[1] + "{{ end }}\n"
            fold = ""
        else:
            head = "{{- $system := .System }}\n"
            fold = "{{ if $system }}{{ $system }}" + SYSTEM_JOIN + '{{ $system = "" }}{{ end }}'
        (user_open, user_close), (assistant_open, assistant_close) = self.user, self.assistant
        return "".join(
            [
                head,
                "{{- range $i, $_ := .Messages }}\n",
                "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n",
                '{{- if eq .Role "user" }}', user_open, fold, "{{ .Content }}", user_close,
                '{{ else if eq .Role "assistant" }}', assistant_open, "{{ .Content }}",
                "{{ if not $last }}", assistant_close, "{{ end }}{{ end }}\n",
                '{{- if and $last (ne .Role "assistant") }}', self.generation, "{{ end }}\n",
                "{{- end }}",
            ]
        )  # fmt: skip

    def render(self, messages: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> str:
        """What `go_template` renders for `messages` (alternating, as Ollama passes them); checked against Go in the
        tests, and against the model's Jinja template at export."""
        system = SYSTEM_JOIN.join(m["content"] for m in messages if m["role"] == "system")
        pieces = [self.system[0] + system + self.system[1]] if self.system and system else []
        fold = system + SYSTEM_JOIN if system and not self.system else ""
        for number, message in enumerate(messages, start=1):
            last = number == len(messages)
            if message["role"] == "user":
                pieces += [self.user[0], fold, message["content"], self.user[1]]
                fold = ""
            elif message["role"] == "assistant":
                pieces += [self.assistant[0], message["content"], "" if last else self.assistant[1]]
            if last and message["role"] != "assistant":
                pieces.append(self.generation)
        return "".join(pieces)


def _role_turns(name: str, marker: str, end_of_turn: str, opening: str, closing: str) -> ChatFormat:
    """A format whose every turn, the system's included, is `opening` (with ROLE) + content + `closing`."""
    user, assistant, system = ((opening.replace("ROLE", role), closing) for role in ("user", "assistant", "system"))
    return ChatFormat(name, marker, end_of_turn, user, assistant, assistant[0], system)


CHAT_FORMATS = (
    _role_turns("chatml", "<|im_start|>", "<|im_end|>", "<|im_start|>ROLE\n", "<|im_end|>\n"),
    _role_turns(
        "llama3", "<|start_header_id|>", "<|eot_id|>", "<|start_header_id|>ROLE<|end_header_id|>\n\n", "<|eot_id|>"
    ),
    _role_turns("phi3", "<|user|>", "<|end|>", "<|ROLE|>\n", "<|end|>\n"),
    ChatFormat(
        "gemma",
        "<start_of_turn>",
        "<end_of_turn>",
        user=("<start_of_turn>user\n", "<end_of_turn>\n"),
        assistant=("<start_of_turn>model\n", "<end_of_turn>\n"),
        generation="<start_of_turn>model\n",
        system=None,
    ),
    # Mistral's assistant text starts with a space the model itself generates after " [/INST]".
    ChatFormat("mistral", "[INST]", "</s>", ("[INST] ", " [/INST]"), (" ", "</s>"), "", None),
)


def adds_bos(tokenizer: Any) -> bool:
    """Whether encoding text puts BOS first: the GGUF's add-BOS flag, so llama.cpp (and Ollama through it) does."""
    ids = tokenizer("x")["input_ids"]
    return tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id


def _jinja(tokenizer: Any, messages: Any) -> str:
    try:
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    except TemplateError as exc:  # Gemma 2's own template, for one, refuses a system message
        raise TrainerError(
            "GGUF export: the chat template cannot render the conversation the Ollama template is checked on (system, "
            f"user, assistant, user): {first_line(exc)}"
        ) from None


def template_prefix(tokenizer: Any, fmt: ChatFormat) -> str:
    """The BOS text the Go template opens with: when the Jinja template renders BOS before the format's text and the
    tokenizer does not add it, Ollama must render it too; when the tokenizer adds it, llama.cpp does, and rendering it
    would double it. (SmolLM2's BOS is `<|im_start|>`, which its first turn opens with anyway.)"""
    bos = tokenizer.bos_token
    jinja = _jinja(tokenizer, PROBE_CHAT)
    opens = bool(bos) and jinja.startswith(bos) and jinja != fmt.render(PROBE_CHAT)
    return bos if opens and not adds_bos(tokenizer) else ""


def chat_format(tokenizer: Any) -> ChatFormat:
    """The format of the tokenizer's chat template, refused unless Ollama would see exactly the text it renders."""
    template = tokenizer.chat_template
    matches = [f for f in CHAT_FORMATS if f.marker in template]
    if len(matches) != 1:
        raise TrainerError(
            "GGUF export: the chat template is not one of the formats with an Ollama template here "
            f"({', '.join(f.name for f in CHAT_FORMATS)}; markers found: {[f.marker for f in matches]}); its first "
            f"line: {template.strip().splitlines()[0][:80]}"
        )
    fmt = matches[0]
    jinja = _jinja(tokenizer, PROBE_CHAT)
    added = tokenizer.bos_token if adds_bos(tokenizer) else ""
    ollama = added + template_prefix(tokenizer, fmt) + fmt.render(PROBE_CHAT)
    if jinja != ollama:
        at = next(
            (i for i, (a, b) in enumerate(zip(jinja, ollama, strict=False)) if a != b), min(len(jinja), len(ollama))
        )
        raise TrainerError(
            f"GGUF export: the chat template has {fmt.name}'s marker {fmt.marker} but renders a conversation "
            f"differently from the {fmt.name} Ollama template, from character {at}: {jinja[at : at + 60]!r} where "
            f"Ollama would see {ollama[at : at + 60]!r}; use export.formats=[safetensors] or a {fmt.name} template"
        )
    return fmt


def default_system_prompt(tokenizer: Any, fmt: ChatFormat) -> str | None:
    """The system prompt the Jinja template inserts when a conversation has none (Qwen 2.5's, SmolLM2's)."""
    if fmt.system is None:
        return None
    head, tail = fmt.system
    text = _jinja(tokenizer, [{"role": "user", "content": PROBE}])
    if not text.startswith(head):  # after the BOS the template renders first (SmolLM2's BOS is its turns' opening)
        text = text.removeprefix(tokenizer.bos_token or "")
    if not text.startswith(head) or tail not in text or PROBE not in text.split(tail, 1)[1]:
        return None
    return text[len(head) :].split(tail, 1)[0]


def trained_system_prompt(rows: list[list[dict[str, Any]]]) -> str | None:
    """The one system message every training conversation opens with, if there is one."""
    prompts = {m[0]["content"] if m and m[0]["role"] == "system" else None for m in rows}
    return prompts.pop() if len(prompts) == 1 else None


def _quoted(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile(gguf_name: str, tokenizer: Any, stop_ids: list[int], system: str | None) -> str:
    """The Modelfile text for `gguf_name` (a file in the same folder)."""
    fmt = chat_format(tokenizer)
    system = system if system is not None else default_system_prompt(tokenizer, fmt)
    stops = dict.fromkeys([fmt.end_of_turn, *tokenizer.convert_ids_to_tokens(stop_ids)])
    lines = [
        f"# {fmt.name} chat format; greedy decoding, as the export was verified",
        f"FROM ./{gguf_name}",
        f"TEMPLATE {_quoted(template_prefix(tokenizer, fmt) + fmt.go_template)}",
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
