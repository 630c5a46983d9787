import json

import pytest
from datasets import Dataset

from tests.helpers import CHAT, TOOL_CHAT, TOOLS, assert_supervises_exactly
from trainer.errors import TrainerError
from trainer.tiny_model import QWEN25_TEMPLATE
from trainer.tokenize import IGNORE_INDEX, tokenize_conversation, tokenize_split, training_template

CONVERSATION = [CHAT[0], *TOOL_CHAT]  # a system prompt, then a tool call and the answer


def test_tiny_tokenizer_carries_qwen25_template_and_gets_trls_training_variant(tokenizer):
    assert tokenizer.chat_template == QWEN25_TEMPLATE.read_text()
    assert training_template(tokenizer) == (QWEN25_TEMPLATE.parent / "qwen2_5_training.jinja").read_text()
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"


def test_exactly_the_assistant_spans_are_supervised_token_by_token(tokenizer):
    template = training_template(tokenizer)
    ids, labels = tokenize_conversation(tokenizer, template, CONVERSATION, TOOLS)
    text = tokenizer.apply_chat_template(CONVERSATION, tools=TOOLS, chat_template=template, tokenize=False)
    assert text == tokenizer.apply_chat_template(CONVERSATION, tools=TOOLS, tokenize=False)  # same rendering

    # The assistant spans, found in the rendered text independently of the template's markers: everything after
    # "<|im_start|>assistant" up to and including "<|im_end|>\n".
    call = '\n<tool_call>\n{"name": "lookup_symbol", "arguments": {"name": "NewRouter"}}\n</tool_call><|im_end|>\n'
    final = "\nIt returns a *chi.Mux.<|im_end|>\n"
    spans = []
    for piece in (call, final):
        start = text.index("<|im_start|>assistant" + piece) + len("<|im_start|>assistant")
        spans.append((start, start + len(piece)))
    assert_supervises_exactly(tokenizer, text, ids, labels, spans)
    assert tokenizer.decode([t for t in labels if t != IGNORE_INDEX]) == call + final


def test_example_without_supervised_tokens_is_an_error(tokenizer):
    row = {"id": "x", "source": "f.jsonl:7", "messages": json.dumps(CONVERSATION), "tools": ""}
    empty_markers = "{% generation %}{% endgeneration %}" + tokenizer.chat_template  # markers around nothing
    with pytest.raises(TrainerError, match=r"f\.jsonl:7: no assistant token is supervised"):
        tokenize_split(Dataset.from_list([row]), tokenizer, empty_markers, 4096, "error")


def test_overlong_conversations_follow_the_policy_and_are_counted(tokenizer):
    template = training_template(tokenizer)
    rows = [{"id": "a", "source": "f.jsonl:1", "messages": json.dumps(CONVERSATION), "tools": json.dumps(TOOLS)}]
    full, _ = tokenize_conversation(tokenizer, template, CONVERSATION, TOOLS)
    prompt_len = full.index(tokenizer.convert_tokens_to_ids("<tool_call>"))
    data = Dataset.from_list(rows)

    kept, report = tokenize_split(data, tokenizer, template, len(full) - 3, "truncate")
    assert len(kept[0]["input_ids"]) == len(full) - 3
    assert report.truncated == [f"f.jsonl:1 ({len(full)} tokens)"] and report.dropped == []

    _, report = tokenize_split(data, tokenizer, template, prompt_len - 1, "truncate")
    assert report.dropped == [f"f.jsonl:1 ({len(full)} tokens)"] and report.examples == 0

    _, report = tokenize_split(data, tokenizer, template, 16, "drop")
    assert len(report.dropped) == 1 and report.tokens == 0
    with pytest.raises(TrainerError, match=r"f\.jsonl:1 \(\d+ tokens\) is longer than training.max_length=16"):
        tokenize_split(data, tokenizer, template, 16, "error")
