"""Conversations → `input_ids` + `labels`, with loss on assistant tokens only.

The mask comes from the chat template's `{% generation %}` markers: TRL's training variant of the model's own
template (for Qwen 2.5 it covers each assistant turn's text, its `<tool_call>` blocks and its `<|im_end|>`).
Training and teacher-forced evaluation both tokenize here, so they score exactly the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset
from trl.chat_template_utils import get_training_chat_template, has_generation_markers

from trainer.dataset import conversation
from trainer.errors import TrainerError
from trainer.progress import track

IGNORE_INDEX = -100


def training_template(tokenizer) -> str:
    """The tokenizer's chat template with generation markers, or an error saying why there is none."""
    template = tokenizer.chat_template
    if not template:
        raise TrainerError("the tokenizer has no chat template; assistant-only loss needs one")
    if has_generation_markers(template):
        return template["default"] if isinstance(template, dict) else template
    try:
        patched = get_training_chat_template(tokenizer)
    except ValueError:
        raise TrainerError(
            "the model's chat template has no {% generation %} markers and TRL ships no training variant for it; "
            "add the markers around assistant output in the template"
        ) from None
    return patched or template


def tokenize_conversation(
    tokenizer, template: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> tuple[list[int], list[int]]:
    rendered = tokenizer.apply_chat_template(
        messages,
        tools=tools,
        chat_template=template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    ids = list(rendered["input_ids"])
    labels = [token if keep else IGNORE_INDEX for token, keep in zip(ids, rendered["assistant_masks"], strict=True)]
    return ids, labels


@dataclass
class TokenizeReport:
    examples: int = 0
    tokens: int = 0
    supervised_tokens: int = 0
    truncated: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self, full_list: str) -> str:
        """One short line: counts, and the first truncated or dropped conversation as an example (all of them are
        in `full_list`, a file of the run: listed on one line they ran to hundreds of characters)."""
        text = f"{self.examples} conversations, {self.tokens} tokens, {self.supervised_tokens} supervised"
        lists = {"truncated to max_length": self.truncated, "dropped (nothing supervised left)": self.dropped}
        if any(lists.values()):
            counts = ", ".join(f"{len(ids)} {what}" for what, ids in lists.items() if ids)
            first = next(ids[0] for ids in lists.values() if ids)
            text += f"; {counts}, e.g. {first} (all in {full_list})"
        return text


def tokenize_split(
    dataset: Dataset, tokenizer, template: str, max_length: int, overlong: str, name: str = "train"
) -> tuple[Dataset, TokenizeReport]:
    """Tokenize a processed split; conversations longer than `max_length` follow the `overlong` policy."""
    report = TokenizeReport()
    columns: dict[str, list[list[int]]] = {"input_ids": [], "labels": []}
    for row in track(dataset, description=f"Tokenizing {name}"):
        ids, labels = tokenize_conversation(tokenizer, template, *conversation(row))
        if all(label == IGNORE_INDEX for label in labels):
            raise TrainerError(f"{row['source']}: no assistant token is supervised; check the chat template")
        if len(ids) > max_length:
            where = f"{row['source']} ({len(ids)} tokens)"
            if overlong == "error":
                raise TrainerError(f"{where} is longer than training.max_length={max_length}")
            if overlong == "drop":
                report.dropped.append(where)
                continue
            ids, labels = ids[:max_length], labels[:max_length]
            if all(label == IGNORE_INDEX for label in labels):
                report.dropped.append(where)
                continue
            report.truncated.append(where)
        report.examples += 1
        report.tokens += len(ids)
        report.supervised_tokens += sum(label != IGNORE_INDEX for label in labels)
        columns["input_ids"].append(ids)
        columns["labels"].append(labels)
    return Dataset.from_dict(columns), report
