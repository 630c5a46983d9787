"""Assistant masks for any chat template: by `{% generation %}` markers where a template has them, by rendering
otherwise; the two agree; a template that rewrites history or drops tools is an error naming where; the template
`model.chat_template` names is the one every stage uses. Per-family tiny models: tests/test_model_families.py."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import trl

from tests.helpers import CHAT, TOOL_CHAT, TOOLS
from trainer.chat_template import CHATML_TOOLS, SHIPPED
from trainer.config import ModelConfig, TinyModelSpec
from trainer.errors import TrainerError
from trainer.model import load_tokenizer
from trainer.tokenize import IGNORE_INDEX, end_of_turn_id, tokenize_conversation, training_template

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
FAMILY_TEMPLATES = Path(__file__).parents[1] / "trainer" / "assets" / "family_templates"
SMOLLM2 = (FAMILY_TEMPLATES / "smollm2.jinja").read_text()


def supervised(tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    """The supervised stretches of a conversation, as text: one entry per run of supervised tokens."""
    runs: list[list[int]] = []
    for i, label in enumerate(labels):
        if label != IGNORE_INDEX:
            assert label == ids[i]
            if i == 0 or labels[i - 1] == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(label)
    return [tokenizer.decode(run) for run in runs]


def test_a_template_trl_does_not_know_gets_its_mask_by_rendering(tokenizer):
    """SmolLM2's own template (ChatML, no markers, no training variant): each assistant turn's text and its
    `<|im_end|>` are supervised, the role header (the generation prompt) is not."""
    tokenizer = _with_template(tokenizer, SMOLLM2)
    template = training_template(tokenizer)
    assert template == SMOLLM2  # no variant: rendering decides
    ids, labels = tokenize_conversation(tokenizer, template, CHAT, None)
    assert ids == tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
    assert supervised(tokenizer, ids, labels) == ["A *chi.Mux.<|im_end|>\n", "It adds middleware.<|im_end|>\n"]
    assert end_of_turn_id(tokenizer, template) == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_rendering_and_qwen25_markers_agree_but_for_the_newline_trl_marks_in_the_generation_prompt(tokenizer):
    """TRL's Qwen 2.5 training variant opens its generation block before the `\\n` that ends
    `<|im_start|>assistant\\n`, a token the generation prompt already holds; rendering leaves it to the prompt. Every
    other token's label is the same."""
    marked = tokenize_conversation(tokenizer, training_template(tokenizer), TOOL_CHAT, TOOLS)
    rendered = tokenize_conversation(tokenizer, tokenizer.chat_template, TOOL_CHAT, TOOLS)
    assert marked[0] == rendered[0]
    newline = tokenizer.convert_tokens_to_ids("Ċ")
    differ = [i for i, (a, b) in enumerate(zip(marked[1], rendered[1], strict=True)) if a != b]
    assistant_headers = [
        i + 2 for i, t in enumerate(marked[0][:-2]) if tokenizer.decode(marked[0][i : i + 2]) == "<|im_start|>assistant"
    ]
    assert differ == assistant_headers and all(
        marked[1][i] == newline and rendered[1][i] == IGNORE_INDEX for i in differ
    )


def test_a_template_that_rewrites_history_is_an_error_naming_the_conversation_and_turn(tokenizer):
    """Qwen 3's own template drops the empty `<think>` block of an assistant turn once another follows it; the
    conversation before the final turn then renders differently from the conversation that includes it."""
    qwen3 = (TRL_TEMPLATES / "qwen3.jinja").read_text()
    with pytest.raises(
        TrainerError, match=r"^data\.jsonl:4: turn 1 \(assistant\): the chat template is not prefix-pre"
    ):
        tokenize_conversation(tokenizer, qwen3, TOOL_CHAT, TOOLS, source="data.jsonl:4")
    ids, labels = tokenize_conversation(tokenizer, qwen3, TOOL_CHAT[:2], TOOLS)  # one assistant turn: it renders
    assert supervised(tokenizer, ids, labels)[0].startswith("<think>\n\n</think>\n\n<tool_call>")
    per_turn = (  # every header counts the turns: each rendering changes all earlier ones
        "{% for m in messages %}{{ '<|im_start|>' + m.role + ' ' + loop.length|string + '\n' + m.content + "
        "'<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    with pytest.raises(TrainerError, match=r"^x: turn 2 \(assistant\): .*not a token prefix"):
        tokenize_conversation(tokenizer, per_turn, CHAT, None, source="x")


def test_tools_on_a_template_that_drops_them_name_the_way_out_and_chatml_tools_renders_them(tokenizer):
    smol = _with_template(tokenizer, SMOLLM2)
    with pytest.raises(
        TrainerError,
        match=r"^t\.jsonl:2: a tool conversation, and the chat template drops 2 of its "
        r"tool parts, e\.g\. the tool definition 'lookup_symbol'; .*model\.chat_template=chatml-tools",
    ):
        tokenize_conversation(smol, SMOLLM2, TOOL_CHAT, TOOLS, source="t.jsonl:2")
    chatml = SHIPPED[CHATML_TOOLS].read_text()
    ids, labels = tokenize_conversation(smol, chatml, TOOL_CHAT, TOOLS)
    call = '<tool_call>\n{"name": "lookup_symbol", "arguments": {"name": "NewRouter"}}\n</tool_call><|im_end|>\n'
    assert supervised(tokenizer, ids, labels) == [call, "It returns a *chi.Mux.<|im_end|>\n"]
    # Qwen 2.5's own rendering, less its default system prompt: the same tool format the tiny Qwen model learns.
    qwen = tokenizer.apply_chat_template(TOOL_CHAT, tools=TOOLS, tokenize=False)
    assert tokenizer.decode(ids) == qwen.replace(
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n", ""
    )


def test_a_template_that_never_closes_an_assistant_turn_is_refused(tokenizer):
    unclosed = (
        "{% for m in messages %}{{ m.role + ': ' + m.content + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    with pytest.raises(TrainerError, match=r"^a probe conversation: turn 1 \(assistant\): .* no special token: a mod"):
        training_template(_with_template(tokenizer, unclosed))  # refused before any data is read
    with pytest.raises(TrainerError, match=r"^d\.jsonl:1: turn 2 \(assistant\): .* never learns to stop"):
        tokenize_conversation(tokenizer, unclosed, CHAT, None, source="d.jsonl:1")
    marked_text_only = (  # markers around a turn's text, its <|im_end|> left out
        "{% for m in messages %}{% if m.role == 'assistant' %}{{ '<|im_start|>assistant\\n' }}{% generation %}"
        "{{ m.content }}{% endgeneration %}{{ '<|im_end|>\\n' }}{% else %}{{ '<|im_start|>' + m.role + '\\n' + "
        "m.content + '<|im_end|>\\n' }}{% endif %}{% endfor %}"
    )
    with pytest.raises(TrainerError, match=r"^the chat template ends an assistant turn on no special token .*'Hello'"):
        training_template(_with_template(tokenizer, marked_text_only))


def test_model_chat_template_is_own_a_shipped_name_or_a_file(tmp_path, tokenizer):
    spec = {"tiny": TinyModelSpec().model_dump(), "cache_dir": tmp_path / "cache"}
    assert load_tokenizer(ModelConfig(**spec)).chat_template == tokenizer.chat_template
    assert (
        load_tokenizer(ModelConfig(**spec, chat_template=CHATML_TOOLS)).chat_template
        == SHIPPED[CHATML_TOOLS].read_text()
    )
    (tmp_path / "mine.jinja").write_text(SMOLLM2)
    assert load_tokenizer(ModelConfig(**spec, chat_template=str(tmp_path / "mine.jinja"))).chat_template == SMOLLM2
    with pytest.raises(
        TrainerError, match=r"^model\.chat_template='nope\.jinja': not `own`, not a shipped template \(chatml-tools\)"
    ):
        load_tokenizer(ModelConfig(**spec, chat_template="nope.jinja"))


def _with_template(tokenizer, template: str):
    other = copy.deepcopy(tokenizer)
    other.chat_template = template
    return other
