"""Answers from a model with transformers: prompts built once from the test conversations, batched greedy decoding,
and the answers parsed back into the training data's message format.

Training uses it for its in-training generation metrics, evaluation for the report; both backends of evaluation
(transformers here, vLLM in `vllm_backend.py`) generate from the same `Prompt.token_ids`, and an OpenAI-compatible
endpoint (`endpoint.py`) gets the same `Prompt.messages` and `tools`. torch is imported only to generate, so the
endpoint path loads no model library.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from trainer.api_index import SymbolIndex, load_symbols
from trainer.config import Config, EvaluationConfig
from trainer.dataset import conversation, is_hand_written, is_heldout, load_processed
from trainer.errors import TrainerError
from trainer.evaluation.metrics import GROUPS
from trainer.progress import track

TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def _tool_call(block: str) -> dict[str, Any] | None:
    """A `<tool_call>` block's call, or None when it is not JSON with a string name."""
    try:
        call = json.loads(block)
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    return {"name": call["name"], "arguments": call.get("arguments", {})}


def parse_assistant(text: str) -> dict[str, Any]:
    """A generated assistant turn → `{"content", "tool_calls"}` in the training data's format."""
    calls = []

    def take(match: re.Match[str]) -> str:
        # Blocks that parse become tool calls; the others stay in the text, where the scorer counts them malformed.
        call = _tool_call(match.group(1))
        if call is None:
            return match.group(0)
        calls.append(call)
        return ""

    message: dict[str, Any] = {"role": "assistant", "content": TOOL_CALL.sub(take, text).strip()}
    if calls:
        message["tool_calls"] = calls
    return message


@dataclass
class Prompt:
    """One test conversation to answer: its turns before the last assistant turn (with the conversation's tools),
    the symbol group it belongs to, and, for a local model, the turns rendered and tokenized."""

    id: str
    messages: list[dict[str, Any]]
    reference: dict[str, Any]
    tools: list[dict[str, Any]] | None = None
    group: str = "seen"
    token_ids: list[int] = field(default_factory=list)


def evaluation_data(config: Config) -> tuple[list[dict[str, str]], SymbolIndex | None]:
    """What every evaluation answers and is scored against: the test split's first `evaluation.limit` rows (an empty
    split is an error) and the API index (`evaluation.symbols`, else the dataset's own)."""
    test = load_processed(config.data.output_dir)["test"]
    if len(test) == 0:
        raise TrainerError(
            f"{config.data.output_dir}: the test split is empty; add examples or raise data.test_fraction"
        )
    rows = list(test)
    if config.evaluation.limit:
        rows = in_turn(rows)[: config.evaluation.limit]
    return rows, load_symbols(config.data.output_dir, config.evaluation.symbols)


def in_turn(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """The rows with the groups taken in turn (a seen row, a held-out one, a how-to one, …; each group in split
    order): what `evaluation.limit` cuts, so a limited run still scores every group."""
    by_group = {name: [row for row in rows if symbol_group(row) == name] for name in GROUPS}
    longest = max(len(group) for group in by_group.values())
    return [group[i] for i in range(longest) for group in by_group.values() if i < len(group)]


def symbol_group(row: dict[str, str]) -> str:
    """`heldout` for a row about a symbol held out of training (`dataset.is_heldout`), `howto` for another
    hand-written example (a task in the user's words, `dataset.is_hand_written`), else `seen`."""
    if is_heldout(row):
        return "heldout"
    return "howto" if is_hand_written(row) else "seen"


def answered_turn(messages: list[dict[str, Any]], group: str) -> int:
    """The index of the turn the model is asked for: the last assistant turn; for a held-out symbol, its first tool
    call where the conversation has one. A held-out name is one the model never trained on, so what is measured is
    whether it looks the name up (`lookup_docs`, with which arguments); after the call, the tool's result already
    holds the answer."""
    if group == "heldout":
        calls = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("tool_calls")]
        if calls:
            return calls[0]
    return len(messages) - 1


def prompts_of(rows: list[dict[str, str]]) -> list[Prompt]:
    """Each row split into the prompt (the turns before the answered turn) and that turn, the reference."""
    prompts = []
    for row in rows:
        messages, tools = conversation(row)
        group = symbol_group(row)
        answered = answered_turn(messages, group)
        prompts.append(Prompt(row["id"], messages[:answered], messages[answered], tools, group))
    return prompts


def build_prompts(tokenizer, rows: list[dict[str, str]]) -> list[Prompt]:
    """Every backend generates from these same token ids, so their answers differ only by the engine."""
    return render(tokenizer, prompts_of(rows))


def render(tokenizer, prompts: list[Prompt]) -> list[Prompt]:
    """The prompts with their turns rendered by the chat template and tokenized (`token_ids`)."""
    for prompt in prompts:
        text = tokenizer.apply_chat_template(
            prompt.messages, tools=prompt.tools, tokenize=False, add_generation_prompt=True
        )
        prompt.token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return prompts


def stop_token_ids(tokenizer) -> list[int]:
    """The template's end-of-turn token (`<|im_end|>`, `<|eot_id|>`, `<end_of_turn>`, `<|end|>`, `</s>`) and eos."""
    from trainer.tokenize import end_of_turn_id, training_template  # TRL: not on the endpoint path

    stops = [end_of_turn_id(tokenizer, training_template(tokenizer)), tokenizer.eos_token_id]
    return list(dict.fromkeys(t for t in stops if t is not None))


def prediction_records(prompts: list[Prompt], answers: list[str | dict[str, Any]]) -> list[dict[str, Any]]:
    """The predictions.jsonl records: what `--predictions` reads, so every scoring path shares one format. An answer
    is generated text, or an assistant message already in the training data's format (from an endpoint)."""
    messages = [parse_assistant(answer) if isinstance(answer, str) else answer for answer in answers]
    return [
        {"id": p.id, "group": p.group, "messages": p.messages, "reference": p.reference, "prediction": message}
        for p, message in zip(prompts, messages, strict=True)
    ]


@dataclass(frozen=True)
class Decoding:
    """The one decoding both backends use: greedy, no sampling, no penalty unless configured. Every setting is
    explicit, so a base model's generation_config.json (Qwen 2.5's: sampling at 0.7, repetition penalty 1.05)
    changes neither backend's answers."""

    max_new_tokens: int
    repetition_penalty: float = 1.0

    @classmethod
    def of(cls, evaluation: EvaluationConfig) -> Decoding:
        return cls(evaluation.max_new_tokens, evaluation.repetition_penalty)

    def transformers_kwargs(self) -> dict[str, Any]:
        # temperature, top_p and top_k at transformers' neutral values: unset, the model's would fill them in.
        return {
            "max_new_tokens": self.max_new_tokens, "do_sample": False, "num_beams": 1,
            "repetition_penalty": self.repetition_penalty, "no_repeat_ngram_size": 0,
            "temperature": 1.0, "top_p": 1.0, "top_k": 50,
        }  # fmt: skip

    def vllm_kwargs(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_new_tokens, "temperature": 0.0, "repetition_penalty": self.repetition_penalty,
            "presence_penalty": 0.0, "frequency_penalty": 0.0,
        }  # fmt: skip


def generate(model, tokenizer, prompts: list[Prompt], decoding: Decoding, batch_size: int) -> list[str]:
    """Greedy answers with transformers, in the prompts' order: batches left-padded, KV cache on. Batches are made
    of prompts of similar length (shortest first), as each prompt of a batch is padded to its longest: a few long
    how-to prompts in every batch made all of them as long (500 s a batch of 8 on 2 cores)."""
    import torch

    tokenizer.padding_side = "left"
    answers: dict[int, str] = {}
    stops = stop_token_ids(tokenizer)
    by_length = sorted(range(len(prompts)), key=lambda i: len(prompts[i].token_ids))
    batches = [by_length[i : i + batch_size] for i in range(0, len(by_length), batch_size)]
    for batch in track(batches, description="Generating answers"):
        ids = [prompts[i].token_ids for i in batch]
        encoded = tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(model.device)
        with torch.no_grad():
            output = model.generate(
                **encoded,
                **decoding.transformers_kwargs(),
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=stops,
            )
        width = encoded["input_ids"].shape[1]
        decoded = tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
        answers |= dict(zip(batch, decoded, strict=True))
    return [answers[i] for i in range(len(prompts))]
