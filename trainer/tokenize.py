"""Conversations → `input_ids` + `labels`, with loss on assistant tokens only.

Two ways to find the assistant tokens; training and teacher-forced evaluation both tokenize here, so they score
exactly the same tokens.

- **Markers.** A template with `{% generation %}` markers (its own, or TRL's training variant of a template
  byte-identical to one TRL knows: Qwen 2.5, Llama 3, Gemma 3, Phi-3, Qwen 3, ...) decides: the tokens rendered
  inside them are supervised.
- **Rendering**, for any other template (SmolLM2's, Mistral's, a fine-tune's one-character variant). For each
  assistant turn, the conversation before it with the generation prompt must be a token prefix of the whole
  conversation, and so must the conversation that ends with the turn (less a terminator made only of special
  tokens that the template puts after the last message, as Phi-3's eos); the tokens between the two are the turn's,
  its end-of-turn token included. A template that renders earlier turns differently once more follow (it strips
  reasoning, moves the system prompt, injects dates per turn) fails that test, and the conversation and turn are an
  error: a mask guessed from such a rendering would be silently wrong.

Both ways must end every assistant turn on a special token (`end_of_turn_id`): a model never trained to emit it
never stops, and generation stops on it. A tool conversation on a template that drops tool calls, results or
definitions is an error naming the way out (`chat_template.tools_way_out`).
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset
from jinja2 import TemplateError
from trl.chat_template_utils import get_training_chat_template, has_generation_markers

from trainer.chat_template import tools_way_out
from trainer.dataset import conversation
from trainer.errors import TrainerError, first_line
from trainer.progress import track

IGNORE_INDEX = -100
NEVER_STOPS = "a model trained on it never learns to stop; use a template that closes each turn (model.chat_template)"
# A conversation the end-of-turn token is read from: an assistant turn between two user turns (Gemma's and
# Mistral's templates want roles to alternate).
PROBE = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Bye"},
]


def training_template(tokenizer) -> str:
    """The template tokenize renders with: the tokenizer's own when it has `{% generation %}` markers, else TRL's
    training variant of it when TRL has one, else the tokenizer's own (its masks then come by rendering). A template
    that does not end an assistant turn on a special token is refused here, before any data is read."""
    template = tokenizer.chat_template
    if not template:
        raise TrainerError("the tokenizer has no chat template; assistant-only loss needs one (model.chat_template)")
    if isinstance(template, dict):
        template = template["default"]
    if not has_generation_markers(template):
        with suppress(ValueError, TemplateError):  # TRL has no variant for it: the mask comes by rendering
            template = get_training_chat_template(tokenizer) or template
    end_of_turn_id(tokenizer, template)
    return template


def end_of_turn_id(tokenizer, template: str) -> int:
    """The token that ends an assistant turn: the last non-blank supervised token of `PROBE`'s assistant turn, which
    must be a special (or added) token, or the model would never learn to stop."""
    ids, labels = tokenize_conversation(tokenizer, template, PROBE, None, source="a probe conversation")
    supervised = [token for token, label in zip(ids, labels, strict=True) if label != IGNORE_INDEX]
    last = _closing_token(tokenizer, supervised)
    if last is None:
        raise TrainerError(
            f"the chat template ends an assistant turn on no special token (its supervised text is "
            f"{tokenizer.decode(supervised)!r}): {NEVER_STOPS}"
        )
    return last


def _closing_token(tokenizer, span: list[int]) -> int | None:
    """The last non-blank token of `span` when it is a special (or added) token, else None."""
    last = next((token for token in reversed(span) if tokenizer.decode([token]).strip()), None)
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    return last if last in special else None


def tokenize_conversation(
    tokenizer,
    template: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    source: str = "conversation",
) -> tuple[list[int], list[int]]:
    """`(input_ids, labels)`: labels hold the token where it is supervised, `IGNORE_INDEX` elsewhere. `source` names
    the conversation in errors."""
    if tools or any(m["role"] == "tool" or m.get("tool_calls") for m in messages):
        _check_tools_rendered(tokenizer, template, messages, tools, source)
    if has_generation_markers(template):
        rendered = _render(tokenizer, template, messages, tools, source, assistant_masks=True)
        ids = list(rendered["input_ids"])
        masks = rendered["assistant_masks"]
        return ids, [token if keep else IGNORE_INDEX for token, keep in zip(ids, masks, strict=True)]
    return _labels_by_rendering(tokenizer, template, messages, tools, source)


def _render(tokenizer, template, messages, tools, where: str, generation_prompt=False, assistant_masks=False):
    try:
        return tokenizer.apply_chat_template(
            messages,
            tools=tools,
            chat_template=template,
            tokenize=True,
            return_dict=True,
            add_generation_prompt=generation_prompt,
            return_assistant_tokens_mask=assistant_masks,
        )
    except TemplateError as exc:
        raise TrainerError(f"{where}: the chat template cannot render it: {first_line(exc)}") from None


def _labels_by_rendering(tokenizer, template, messages, tools, source: str) -> tuple[list[int], list[int]]:
    full = list(_render(tokenizer, template, messages, tools, source)["input_ids"])
    labels = [IGNORE_INDEX] * len(full)
    special = set(tokenizer.all_special_ids)
    for turn, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        where = f"{source}: turn {turn} (assistant)"
        prompt = list(_render(tokenizer, template, messages[:turn], tools, where, generation_prompt=True)["input_ids"])
        upto = list(_render(tokenizer, template, messages[: turn + 1], tools, where)["input_ids"])
        end = next((i for i, (a, b) in enumerate(zip(upto, full, strict=False)) if a != b), min(len(upto), len(full)))
        terminator = upto[end:]  # what the template adds after the last message only (Phi-3: eos)
        if full[: len(prompt)] != prompt or upto[: len(prompt)] != prompt:
            problem = (
                "is not prefix-preserving: the conversation before this turn, with the generation prompt, is not a "
                "token prefix of the conversation with it"
            )
        elif terminator and not (set(terminator) <= special and full[-len(terminator) :] == terminator):
            problem = "is not prefix-preserving: this turn renders differently once later turns follow it"
        elif _closing_token(tokenizer, full[len(prompt) : end]) is None:
            raise TrainerError(f"{where}: the chat template ends this turn on no special token: {NEVER_STOPS}")
        else:
            labels[len(prompt) : end] = full[len(prompt) : end]
            continue
        raise TrainerError(
            f"{where}: the chat template {problem} (it rewrites history: strips reasoning, moves the system "
            "prompt, injects text), so no mask can be derived from it; use a template that keeps earlier turns "
            "unchanged or has {% generation %} markers (model.chat_template)"
        )
    return full, labels


def _check_tools_rendered(tokenizer, template, messages, tools, source: str) -> None:
    """A template that silently drops tool calls, tool results or tool definitions would train on a conversation
    the model never sees whole."""
    parts = [("tool definition", (tool.get("function") or tool).get("name", "")) for tool in tools or []]
    parts += [
        ("tool call", (c.get("function") or c).get("name", "")) for m in messages for c in m.get("tool_calls") or []
    ]
    parts += [("tool result", m["content"].strip()) for m in messages if m["role"] == "tool"]
    try:
        text = tokenizer.apply_chat_template(messages, tools=tools, chat_template=template, tokenize=False)
    except TemplateError as exc:
        problem = f"cannot render it ({first_line(exc)})"
    else:
        dropped = [f"{what} {name!r}" for what, name in parts if name not in text]
        if not dropped:
            return
        problem = f"drops {len(dropped)} of its tool parts, e.g. the {dropped[0]}"
    raise TrainerError(f"{source}: a tool conversation, and the chat template {problem}; {tools_way_out(tokenizer)}")


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
        ids, labels = tokenize_conversation(tokenizer, template, *conversation(row), source=row["source"])
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
