"""Every supported family on a tiny random model built locally (its architecture scaled down, its own template and
special tokens): the mask token by token, its end-of-turn token supervised and stopping generation, markers and
rendering agreeing, tools refused where the template cannot render them; then train, evaluate and export each."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.helpers import (
    CHAT,
    DEBUG_CONFIG,
    SAMPLE_EXAMPLES,
    TOOL_CHAT,
    TOOLS,
    assert_supervises_exactly,
    debug_overrides,
    set_args,
)
from trainer.chat_template import CHATML_TOOLS, SHIPPED
from trainer.config import TinyModelSpec
from trainer.errors import TrainerError
from trainer.evaluation.generation import stop_token_ids
from trainer.tiny_model import FAMILIES, build_tiny_model
from trainer.tokenize import IGNORE_INDEX, tokenize_conversation, training_template

# Per family: how the mask comes, the end-of-turn token, and the text each assistant turn supervises around its
# content (written from each family's template, independently of both ways of deriving a mask).
FAMILY_MASKS = {
    "qwen2.5": ("markers", "<|im_end|>", "\n", "<|im_end|>\n"),  # TRL's variant marks the header's "\n" too
    "qwen3": ("markers", "<|im_end|>", "<think>\n\n</think>\n\n", "<|im_end|>\n"),
    "llama3": ("markers", "<|eot_id|>", "", "<|eot_id|>"),
    "gemma3": ("markers", "<end_of_turn>", "", "<end_of_turn>\n"),
    "phi3": ("markers", "<|end|>", "", "<|end|>\n"),  # and the eos Phi-3 puts after the last message
    "mistral": ("rendering", "</s>", " ", "</s>"),
    "smollm2": ("rendering", "<|im_end|>", "", "<|im_end|>\n"),
}
LAST_TURN_EXTRA = {"phi3": "<|endoftext|>"}
TOOLS_RENDERED = {"qwen2.5", "qwen3"}  # the others drop tool calls (Llama 3, SmolLM2) or refuse the tool role
TOOLS_WAY_OUT = {"smollm2": CHATML_TOOLS}  # its pipeline run trains tool conversations through the shipped template


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    from transformers import AutoTokenizer

    cache = tmp_path_factory.mktemp("families")
    return lambda family: AutoTokenizer.from_pretrained(build_tiny_model(TinyModelSpec(family=family), cache))


def test_every_family_is_listed_here():
    assert set(FAMILY_MASKS) == set(FAMILIES)


@pytest.mark.parametrize("family", FAMILY_MASKS)
def test_each_family_supervises_exactly_its_assistant_turns_and_end_of_turn_token_by_token(tokenizers, family):
    tokenizer = tokenizers(family)
    how, end_of_turn, lead, tail = FAMILY_MASKS[family]
    template = training_template(tokenizer)
    assert (template != tokenizer.chat_template) == (how == "markers")
    ids, labels = tokenize_conversation(tokenizer, template, CHAT, None)

    text = tokenizer.apply_chat_template(CHAT, tokenize=False, chat_template=template)
    spans, start = [], 0
    answers = [m["content"] for m in CHAT if m["role"] == "assistant"]
    for number, answer in enumerate(answers, start=1):
        piece = lead + answer + tail + (LAST_TURN_EXTRA.get(family, "") if number == len(answers) else "")
        start = text.index(piece, start)
        spans.append((start, start + len(piece)))
    assert_supervises_exactly(tokenizer, text, ids, labels, spans)

    eot = tokenizer.convert_tokens_to_ids(end_of_turn)
    assert sum(1 for t, label in zip(ids, labels, strict=True) if t == eot and label == eot) == len(answers)
    assert stop_token_ids(tokenizer)[0] == eot  # generation stops on it


@pytest.mark.parametrize("family", [f for f, (how, *_) in FAMILY_MASKS.items() if how == "markers" and f != "qwen2.5"])
def test_the_rendering_mask_of_the_own_template_equals_the_marker_mask(tokenizers, family):
    """Token by token, on a conversation both apply to. Qwen 3's own template drops the empty `<think>` block of an
    assistant turn once a user turn follows it: rendering refuses the multi-turn conversation there, naming the turn
    (the markers of TRL's variant, which keeps every block, decide). Qwen 2.5: tests/test_chat_templates.py."""
    tokenizer = tokenizers(family)
    own, marked = tokenizer.chat_template, training_template(tokenizer)
    conversations = [CHAT[:3]] if family == "qwen3" else [CHAT, CHAT[:3]]
    for messages in conversations:
        assert tokenize_conversation(tokenizer, own, messages, None) == tokenize_conversation(
            tokenizer, marked, messages, None
        )
    if family == "qwen3":
        with pytest.raises(TrainerError, match=r"^c\.jsonl:1: turn 2 \(assistant\): the chat template is not prefix"):
            tokenize_conversation(tokenizer, own, CHAT, None, source="c.jsonl:1")


@pytest.mark.parametrize("family", FAMILY_MASKS)
def test_tool_conversations_train_only_where_the_template_renders_tools(tokenizers, family):
    tokenizer = tokenizers(family)
    template = training_template(tokenizer)
    if family in TOOLS_RENDERED:
        _, labels = tokenize_conversation(tokenizer, template, TOOL_CHAT, TOOLS)
        assert tokenizer.decode([label for label in labels if label != IGNORE_INDEX]).count("<tool_call>") == 1
        return
    way_out = "model.chat_template=chatml-tools" if family == "smollm2" else r"model\.chat_template to a \.jinja file"
    with pytest.raises(TrainerError, match=rf"^t\.jsonl:3: a tool conversation, and the chat template .*{way_out}"):
        tokenize_conversation(tokenizer, template, TOOL_CHAT, TOOLS, source="t.jsonl:3")


@pytest.mark.slow
@pytest.mark.parametrize("family", [f for f in FAMILY_MASKS if f != "qwen2.5"])  # qwen2.5: the pipeline tests
def test_each_family_trains_evaluates_and_exports(tmp_path, model_cache, family):
    """A few QLoRA steps, the evaluation report, the merged export verified against base+adapter; the exported folder
    keeps the template trained with (the family's own; for SmolLM2, tool conversations too, through `chatml-tools`)
    and stops on the family's end-of-turn token."""
    from transformers import AutoTokenizer, GenerationConfig

    from trainer.cli import main

    examples = tmp_path / "examples"
    examples.mkdir()
    for name in ["chi-middleware.jsonl"] + (["chi-tools.jsonl"] if family in TOOLS_WAY_OUT else []):
        shutil.copy(SAMPLE_EXAMPLES / name, examples)
    overrides = [*debug_overrides(tmp_path, model_cache, examples), "data.sources=[]", f"model.tiny.family={family}"]
    if family in TOOLS_WAY_OUT:
        overrides.append(f"model.chat_template={TOOLS_WAY_OUT[family]}")
    overrides += ["training.max_steps=2", "training.save_steps=2", "evaluation.limit=2", "evaluation.max_new_tokens=4"]
    assert main(["pipeline", "--config", str(DEBUG_CONFIG), *set_args(overrides)]) == 0

    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["loss"] > 0 and report["n_examples"] >= 1
    exported = tmp_path / "models" / "tiny-debug"
    tokenizer = AutoTokenizer.from_pretrained(exported, local_files_only=True)
    template = SHIPPED[TOOLS_WAY_OUT[family]] if family in TOOLS_WAY_OUT else FAMILIES[family].template
    assert tokenizer.chat_template == template.read_text()
    eot = tokenizer.convert_tokens_to_ids(FAMILY_MASKS[family][1])
    assert stop_token_ids(tokenizer)[0] == eot
    assert eot in GenerationConfig.from_pretrained(exported).eos_token_id
