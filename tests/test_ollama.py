"""The Ollama Modelfile of every family: its Go template, run by Go's own text/template the way Ollama runs it, renders
what the family's Jinja template renders; its stop tokens are the family's end of turn; templates that only look
like a format are refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import gguf
import pytest
from tokenizers import processors
from transformers import AutoConfig, AutoTokenizer

from trainer.config import TinyModelSpec
from trainer.errors import TrainerError
from trainer.export.gguf_export import stop_ids
from trainer.export.gguf_file import family_of
from trainer.export.ollama import CHAT_FORMATS, adds_bos, chat_format, modelfile, trained_system_prompt
from trainer.tiny_model import FAMILIES, build_tiny_model
from trainer.tokenize import end_of_turn_id, training_template

GO_RENDERER = """package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
)

type message struct{ Role, Content string }

// Ollama's Template.Execute for a chat (template/template.go): the template parsed with missingkey=zero and its json
// function; system messages joined into .System and kept in .Messages, consecutive same-role messages merged.
func render(source string, messages []message) string {
	var system []string
	var collated []*message
	for i := range messages {
		m := messages[i]
		if m.Role == "system" {
			system = append(system, m.Content)
		}
		if n := len(collated); n > 0 && collated[n-1].Role == m.Role {
			collated[n-1].Content += "\\n\\n" + m.Content
		} else {
			collated = append(collated, &m)
		}
	}
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	t := template.Must(template.New("").Option("missingkey=zero").Funcs(funcs).Parse(source))
	var out strings.Builder
	values := map[string]any{"System": strings.Join(system, "\\n\\n"), "Messages": collated}
	if err := t.Execute(&out, values); err != nil {
		panic(err)
	}
	return out.String()
}

func main() {
	var cases []struct {
		Template string
		Messages []message
	}
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	var rendered []string
	for _, c := range cases {
		rendered = append(rendered, render(c.Template, c.Messages))
	}
	json.NewEncoder(os.Stdout).Encode(rendered)
}
"""
GO_CODE = '```go\nr := chi.NewRouter()\nr.Get("/", func(w http.ResponseWriter, r *http.Request) {})\n```'
CHATS = [
    [
        {"role": "system", "content": "You answer questions about chi."},
        {"role": "user", "content": "How do I register a GET route?"},
        {"role": "assistant", "content": f"Use Get:\n{GO_CODE}"},
        {"role": "user", "content": "And a subrouter?"},
    ],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Show a middleware."},
    ],
    [{"role": "user", "content": "What does NewRouter return?"}],
]
# Per family: the format, what Ollama stops on (the end-of-turn token first, then the generation config's eos ids),
# and the Modelfile's SYSTEM when the run trained with none (the default the Jinja template inserts).
EXPECTED = {
    "qwen2.5": ("chatml", ["<|im_end|>", "<|endoftext|>"], "You are Qwen, created by Alibaba Cloud. You are a helpful "
                "assistant."),
    "qwen3": ("chatml", ["<|im_end|>", "<|endoftext|>"], None),
    "llama3": ("llama3", ["<|eot_id|>", "<|end_of_text|>"], None),
    "gemma3": ("gemma", ["<end_of_turn>", "<eos>"], None),
    "phi3": ("phi3", ["<|end|>", "<|endoftext|>", "<|assistant|>"], None),
    "mistral": ("mistral", ["</s>"], None),
    "smollm2": ("chatml", ["<|im_end|>"], "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
}  # fmt: skip
# Per family: the architecture llama.cpp knows it by, which the GGUF writer writes (gguf_file.FAMILIES).
GGUF_ARCHITECTURES = {
    "qwen2.5": "qwen2", "qwen3": "qwen3", "llama3": "llama", "gemma3": "gemma3", "phi3": "phi3", "mistral": "llama",
    "smollm2": "llama",
}  # fmt: skip


@pytest.fixture(scope="module")
def family_dirs(model_cache):
    return lambda family: build_tiny_model(TinyModelSpec(family=family), model_cache)


@pytest.fixture(scope="module")
def go_render(tmp_path_factory):
    """Render `[(template, messages), ...]` with Go's text/template, as Ollama does: one build, one process."""
    if shutil.which("go") is None:
        pytest.skip("needs Go to run Ollama's template language")
    folder = tmp_path_factory.mktemp("go-render")
    (folder / "render.go").write_text(GO_RENDERER)
    env = {**os.environ, "GO111MODULE": "off", "GOCACHE": str(folder / "cache")}
    subprocess.run(["go", "build", "-o", str(folder / "render"), str(folder / "render.go")], check=True, env=env)

    def render(cases: list[tuple[str, list[dict[str, str]]]]) -> list[str]:
        payload = json.dumps([{"Template": template, "Messages": messages} for template, messages in cases])
        done = subprocess.run([folder / "render"], input=payload, capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    return render


def quoted(text: str, command: str) -> str | None:
    """The triple-quoted argument of a Modelfile command, or None when the file has no such command."""
    head = f'{command} """'
    return text.split(head, 1)[1].split('"""', 1)[0] if head in text else None


def ollama_cases(text: str) -> list[tuple[str, list[dict[str, str]]]]:
    """Each of CHATS as Ollama renders it with this Modelfile: its SYSTEM first when the chat has no system message."""
    template, system = quoted(text, "TEMPLATE"), quoted(text, "SYSTEM")
    default = [{"role": "system", "content": system}] if system else []
    return [(template, messages if messages[0]["role"] == "system" else default + messages) for messages in CHATS]


def test_every_family_and_format_is_covered():
    assert set(EXPECTED) == set(FAMILIES) == set(GGUF_ARCHITECTURES)
    assert {name for name, *_ in EXPECTED.values()} == {f.name for f in CHAT_FORMATS}


@pytest.mark.parametrize("family", EXPECTED)
def test_modelfile_renders_in_go_exactly_as_the_family_jinja_template_and_stops_on_its_end_of_turn(
    family, family_dirs, go_render
):
    """Go's text/template runs the Modelfile's TEMPLATE as Ollama does; what Ollama then tokenizes (the tokenizer's
    BOS where it adds one, then the rendered text) is the text the family's Jinja template renders, which is what
    training tokenized. Stops: the end-of-turn token the loss mask ends each assistant turn on, then the eos ids."""
    folder = family_dirs(family)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    name, stops, system = EXPECTED[family]
    text = modelfile("model-f16.gguf", tokenizer, stop_ids(folder), None)

    assert chat_format(tokenizer).name == name and f"# {name} chat format" in text
    assert [
        json.loads(line.split(" ", 2)[2]) for line in text.splitlines() if line.startswith("PARAMETER stop")
    ] == stops
    assert tokenizer.convert_ids_to_tokens(end_of_turn_id(tokenizer, training_template(tokenizer))) == stops[0]
    assert quoted(text, "SYSTEM") == system
    assert "PARAMETER temperature 0\nPARAMETER top_k 1\nPARAMETER repeat_penalty 1\n" in text
    bos = tokenizer.bos_token if adds_bos(tokenizer) else ""
    rendered = go_render(ollama_cases(text))
    for messages, ollama in zip(CHATS, rendered, strict=True):
        assert bos + ollama == tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_a_tokenizer_that_adds_bos_gets_no_bos_in_the_template(family_dirs, go_render):
    """Llama 3's real tokenizer puts <|begin_of_text|> first itself (so the GGUF says add BOS and llama.cpp adds it):
    a template rendering it too would give Ollama two."""
    tokenizer = AutoTokenizer.from_pretrained(family_dirs("llama3"))
    bos = tokenizer.bos_token
    assert quoted(modelfile("m.gguf", tokenizer, [], None), "TEMPLATE").startswith(bos)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    assert adds_bos(tokenizer)
    text = modelfile("m.gguf", tokenizer, [], None)
    assert not quoted(text, "TEMPLATE").startswith(bos)
    ollama = go_render(ollama_cases(text))[0]
    assert bos + ollama == tokenizer.apply_chat_template(CHATS[0], tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize(
    ("family", "template", "problem"),
    [
        ("mistral", "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[INST]{{ m.content }}[/INST]"
         "{% else %}{{ m.content + eos_token }}{% endif %}{% endfor %}", r"mistral's marker \[INST\] but renders"),
        ("llama3", "{{ bos_token }}<|start_header_id|>system<|end_header_id|>\n\nToday Date: 26 Jul 2024<|eot_id|>"
         "{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
         "{% endfor %}", r"llama3's marker <\|start_header_id\|> but renders"),
        ("llama3", "{% for m in messages %}{{ m.content }}{% endfor %}",
         r"not one of the formats .*markers found: \[\]"),
        ("qwen2.5", "<|im_start|>[INST]{% for m in messages %}{{ m.content }}{% endfor %}",
         r"markers found: \['<\|im_start\|>', '\[INST\]'\]"),
        ("gemma3", "{% if messages[0].role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
         "<start_of_turn>", r"cannot render the conversation .*: System role not supported"),
    ],
)  # fmt: skip
def test_a_template_that_only_looks_like_a_format_is_refused_by_name(family, template, problem, family_dirs):
    """A Mistral variant without spaces around [INST], a Llama 3.1-style dated system header, no known marker, two,
    Gemma 2's refusal of a system message."""
    tokenizer = AutoTokenizer.from_pretrained(family_dirs(family))
    tokenizer.chat_template = template
    with pytest.raises(TrainerError, match=rf"^GGUF export: .*{problem}"):
        modelfile("m.gguf", tokenizer, [], None)


def test_modelfile_takes_the_system_prompt_every_training_conversation_opened_with(family_dirs):
    same = [[{"role": "system", "content": "You answer about chi."}]] * 3
    assert trained_system_prompt(same) == "You answer about chi."
    assert trained_system_prompt([*same, [{"role": "user", "content": "hi"}]]) is None
    for family in ("qwen2.5", "gemma3"):
        tokenizer = AutoTokenizer.from_pretrained(family_dirs(family))
        text = modelfile("model-q8_0.gguf", tokenizer, [tokenizer.eos_token_id], "You answer about chi.")
        assert quoted(text, "SYSTEM") == "You answer about chi." and "You are Qwen" not in text


@pytest.mark.parametrize("family", EXPECTED)
def test_the_gguf_writer_takes_each_family_or_refuses_it_naming_its_architecture(family, family_dirs):
    """The table in docs/export.md: every family's architecture is written, under llama.cpp's name for it (Mistral
    is llama.cpp's `llama`); one that is not (Gemma 2's, with the family's name changed) fails before anything is
    written, with its name."""
    config = AutoConfig.from_pretrained(family_dirs(family))
    assert gguf.MODEL_ARCH_NAMES[family_of(config).arch] == GGUF_ARCHITECTURES[family]
    config.model_type = "gemma2"
    with pytest.raises(TrainerError, match=r"^GGUF export: the architecture 'gemma2' .*not one this exporter writes"):
        family_of(config)
