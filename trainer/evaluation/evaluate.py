"""The evaluate stage: teacher-forced loss/perplexity/token accuracy on the test split, greedy generations for the
test prompts, `predictions.jsonl` and `report.json`.

The adapter is evaluated on the same base it was trained on (4-bit when the config quantizes), so the numbers
describe the function that was trained.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from rich.progress import track

from trainer.config import Config, save_config
from trainer.errors import TrainerError
from trainer.synthesis.build import conversation, load_processed
from trainer.training.model import load_base_model, load_tokenizer
from trainer.training.tokenize import IGNORE_INDEX, tokenize_conversation, training_template
from trainer.training.train import PRECISION_DTYPES, resolve_checkpoint, resolve_precision

TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def load_finetuned(config: Config, checkpoint: Path):
    dtype = PRECISION_DTYPES[resolve_precision(config.training.precision)]
    tokenizer = load_tokenizer(config.model, checkpoint)
    base = load_base_model(config.model, dtype, quantized=True)
    model = PeftModel.from_pretrained(base, str(checkpoint)).eval()
    return model, tokenizer


def parse_assistant(text: str) -> dict[str, Any]:
    """A generated assistant turn → `{"content", "tool_calls"}` in the training data's format."""
    calls = []
    for block in TOOL_CALL.findall(text):
        try:
            call = json.loads(block)
        except json.JSONDecodeError:
            continue
        if isinstance(call, dict) and isinstance(call.get("name"), str):
            calls.append({"name": call["name"], "arguments": call.get("arguments", {})})
    message: dict[str, Any] = {"role": "assistant", "content": TOOL_CALL.sub("", text).strip()}
    if calls:
        message["tool_calls"] = calls
    return message


@torch.no_grad()
def teacher_forced(model, tokenizer, rows: list[dict[str, str]]) -> dict[str, float]:
    """Token-weighted mean NLL and argmax accuracy over supervised (assistant) tokens."""
    template = training_template(tokenizer)
    nll, correct, count = 0.0, 0, 0
    for row in track(rows, description="Scoring test split", transient=True):
        ids, labels = tokenize_conversation(tokenizer, template, *conversation(row))
        logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0, :-1].float()
        target = torch.tensor(labels[1:], device=logits.device)
        keep = target != IGNORE_INDEX
        nll += torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum").item()
        correct += int((logits[keep].argmax(-1) == target[keep]).sum())
        count += int(keep.sum())
    loss = nll / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "token_accuracy": correct / count}


def split_prompt(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The turns before the last assistant turn (the prompt) and that turn (the reference)."""
    return messages[:-1], messages[-1]


@torch.no_grad()
def generate(model, tokenizer, rows: list[dict[str, str]], max_new_tokens: int, batch_size: int) -> list[dict]:
    tokenizer.padding_side = "left"
    stop = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>",) if t in tokenizer.get_vocab()]
    records = []
    batches = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    for batch in track(batches, description="Generating answers", transient=True):
        prompts, references, texts = [], [], []
        for row in batch:
            messages, tools = conversation(row)
            prompt, reference = split_prompt(messages)
            prompts.append(prompt)
            references.append(reference)
            texts.append(tokenizer.apply_chat_template(prompt, tools=tools, tokenize=False, add_generation_prompt=True))
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        output = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=stop or tokenizer.eos_token_id,
        )
        for row, prompt, reference, ids in zip(batch, prompts, references, output, strict=True):
            text = tokenizer.decode(ids[encoded["input_ids"].shape[1] :], skip_special_tokens=True)
            records.append(
                {"id": row["id"], "messages": prompt, "reference": reference, "prediction": parse_assistant(text)}
            )
    return records


def _same_answer(reference: dict[str, Any], prediction: dict[str, Any]) -> bool:
    return reference.get("content", "").strip() == prediction.get("content", "").strip() and reference.get(
        "tool_calls"
    ) == prediction.get("tool_calls")


def evaluate(config: Config, checkpoint: Path | None = None) -> dict[str, Any]:
    ev = config.evaluation
    checkpoint = resolve_checkpoint(config, checkpoint)
    test = load_processed(config.data.output_dir)["test"]
    if len(test) == 0:
        raise TrainerError(
            f"{config.data.output_dir}: the test split is empty; add examples or raise data.test_fraction"
        )
    rows = list(test)[: ev.limit]
    model, tokenizer = load_finetuned(config, checkpoint)
    report: dict[str, Any] = {"checkpoint": str(checkpoint), "examples": len(rows)}
    report.update(teacher_forced(model, tokenizer, rows))
    predictions = generate(model, tokenizer, rows, ev.max_new_tokens, ev.batch_size)
    report["exact_match"] = sum(_same_answer(p["reference"], p["prediction"]) for p in predictions) / len(rows)
    ev.output_dir.mkdir(parents=True, exist_ok=True)
    with (ev.output_dir / "predictions.jsonl").open("w", encoding="utf-8") as out:
        for record in predictions:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    (ev.output_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    save_config(config, ev.output_dir / "resolved_config.yaml")
    return report


def format_report(report: dict[str, Any]) -> str:
    return (
        f"{report['examples']} test conversations · loss {report['loss']:.4f} · "
        f"perplexity {report['perplexity']:.2f} · token accuracy {report['token_accuracy']:.3f} · "
        f"exact match {report['exact_match']:.3f}"
    )
