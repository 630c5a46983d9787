"""The evaluate stage: teacher-forced loss/perplexity/token accuracy on the test split, batched greedy generations
for the test prompts scored by `metrics.py`, optionally the base model on the same prompts (`--baseline`), and
`predictions.jsonl`, `report.json`, `report.md`.

The adapter is evaluated on the same base it was trained on (4-bit when the config quantizes), so the numbers
describe the function that was trained; the baseline is that base with the adapter switched off.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from rich.progress import track

from trainer.config import Config, save_config
from trainer.errors import TrainerError
from trainer.evaluation.metrics import SymbolIndex, load_symbols, score
from trainer.evaluation.report import deltas, load_predictions, metric, write_report
from trainer.synthesis.build import conversation, load_processed
from trainer.training.callbacks import METRICS
from trainer.training.model import load_adapter, load_base_model, load_tokenizer
from trainer.training.tokenize import IGNORE_INDEX, tokenize_conversation, training_template
from trainer.training.train import PRECISION_DTYPES, resolve_checkpoint, resolve_precision

TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def load_finetuned(config: Config, checkpoint: Path):
    dtype = PRECISION_DTYPES[resolve_precision(config.training.precision)]
    tokenizer = load_tokenizer(config.model, checkpoint)
    base = load_base_model(config.model, dtype, quantized=True)
    model = load_adapter(base, checkpoint, config.model)
    return model, tokenizer


def load_plain(config: Config, which: str):
    """`base`: the base model as training loaded it (4-bit when the config quantizes); else an exported folder."""
    dtype = PRECISION_DTYPES[resolve_precision(config.training.precision)]
    if which == "base":
        return load_base_model(config.model, dtype, quantized=True).eval(), load_tokenizer(config.model)
    if not (Path(which) / "config.json").is_file():
        raise TrainerError(f"{which}: not a model folder (no config.json); pass an exported model or `base`")
    folder = config.model.model_copy(update={"name_or_path": which, "tiny": None, "revision": None})
    return load_base_model(folder, dtype, quantized=False).eval(), load_tokenizer(folder, which)


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


def _model_report(model, tokenizer, rows, config: Config, symbols: SymbolIndex | None) -> tuple[dict, list[dict]]:
    ev = config.evaluation
    predictions = generate(model, tokenizer, rows, ev.max_new_tokens, ev.batch_size)
    return {**teacher_forced(model, tokenizer, rows), **score(predictions, symbols)}, predictions


def evaluate(config: Config, checkpoint: Path | None = None) -> dict[str, Any]:
    ev = config.evaluation
    if ev.model and ev.baseline:
        raise TrainerError("--baseline compares an adapter with its base; with --model, evaluate each model on its own")
    evaluated = ev.model or str(resolve_checkpoint(config, checkpoint))
    test = load_processed(config.data.output_dir)["test"]
    if len(test) == 0:
        raise TrainerError(
            f"{config.data.output_dir}: the test split is empty; add examples or raise data.test_fraction"
        )
    rows = list(test)[: ev.limit]
    symbols = load_symbols(config.data.output_dir, config.evaluation.symbols)
    model, tokenizer = load_plain(config, ev.model) if ev.model else load_finetuned(config, Path(evaluated))
    manifest = config.data.output_dir / "manifest.json"
    report: dict[str, Any] = {
        "checkpoint": evaluated,
        "dataset_hash": json.loads(manifest.read_text())["content_hash"] if manifest.is_file() else None,
    }
    finetuned, predictions = _model_report(model, tokenizer, rows, config, symbols)
    report |= finetuned
    if ev.baseline:
        with model.disable_adapter():
            baseline, base_predictions = _model_report(model, tokenizer, rows, config, symbols)
        report["baseline"], report["delta"] = baseline, deltas(finetuned, baseline)
        for record, base in zip(predictions, base_predictions, strict=True):
            record["baseline"] = base["prediction"]
    report["config"] = config.model_dump(mode="json")
    ev.output_dir.mkdir(parents=True, exist_ok=True)
    with (ev.output_dir / "predictions.jsonl").open("w", encoding="utf-8") as out:
        for record in predictions:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    metrics_log = config.training.logging_dir / METRICS
    write_report(report, ev.output_dir, metrics_log if metrics_log.is_file() else None)
    save_config(config, ev.output_dir / "resolved_config.yaml")
    return report


def score_predictions(path: Path, symbols: Path | None, out_dir: Path) -> dict[str, Any]:
    """Score a predictions file made anywhere (vLLM, another trainer) without loading a model."""
    report = {"predictions": str(path), **score(load_predictions(path), SymbolIndex.load(symbols) if symbols else None)}
    write_report(report, out_dir)
    return report


def format_report(report: dict[str, Any]) -> str:
    parts = [f"{report['n_examples']} test conversations"]
    if "loss" in report:
        parts.append(f"loss {report['loss']:.4f} · perplexity {report['perplexity']:.2f}")
        parts.append(f"token accuracy {report['token_accuracy']:.3f}")
    for key in ("rougeL", "chrf", "tool_call.name_accuracy", "api_grounding.grounded_rate"):
        value = metric(report, key)
        if value is not None:
            delta = report.get("delta", {}).get(key)
            parts.append(f"{key} {value:.3f}" + (f" ({delta:+.3f} vs base)" if delta is not None else ""))
    return " · ".join(parts)
