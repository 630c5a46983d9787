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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.progress import track

from trainer.config import Config, save_config
from trainer.errors import TrainerError
from trainer.evaluation.metrics import SymbolIndex, load_symbols, score
from trainer.evaluation.report import deltas, load_predictions, metric, write_report
from trainer.evaluation.vllm_backend import generation_backend, vllm_answers
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


@dataclass
class Prompt:
    """One test conversation to answer: its turns before the last assistant turn, rendered and tokenized."""

    id: str
    messages: list[dict[str, Any]]
    reference: dict[str, Any]
    token_ids: list[int]


def build_prompts(tokenizer, rows: list[dict[str, str]]) -> list[Prompt]:
    """Every backend generates from these same token ids, so their answers differ only by the engine."""
    prompts = []
    for row in rows:
        messages, tools = conversation(row)
        prompt, reference = messages[:-1], messages[-1]  # the turns before the last assistant turn, and that turn
        text = tokenizer.apply_chat_template(prompt, tools=tools, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        prompts.append(Prompt(row["id"], prompt, reference, ids))
    return prompts


def stop_token_ids(tokenizer) -> list[int]:
    return [tokenizer.convert_tokens_to_ids("<|im_end|>")] if "<|im_end|>" in tokenizer.get_vocab() else []


def prediction_records(prompts: list[Prompt], answers: list[str]) -> list[dict[str, Any]]:
    """The predictions.jsonl records: what `--predictions` reads, so both scoring paths share one format."""
    return [
        {"id": p.id, "messages": p.messages, "reference": p.reference, "prediction": parse_assistant(answer)}
        for p, answer in zip(prompts, answers, strict=True)
    ]


@torch.no_grad()
def generate(model, tokenizer, prompts: list[Prompt], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy answers with transformers: batches left-padded, KV cache on."""
    tokenizer.padding_side = "left"
    answers = []
    batches = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]
    for batch in track(batches, description="Generating answers", transient=True):
        encoded = tokenizer.pad({"input_ids": [p.token_ids for p in batch]}, return_tensors="pt").to(model.device)
        output = model.generate(
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=stop_token_ids(tokenizer) or tokenizer.eos_token_id,
        )
        width = encoded["input_ids"].shape[1]
        answers += [tokenizer.decode(ids[width:], skip_special_tokens=True) for ids in output]
    return answers


def evaluate(config: Config, checkpoint: Path | None = None) -> dict[str, Any]:
    ev = config.evaluation
    if ev.model and ev.baseline:
        raise TrainerError("--baseline compares an adapter with its base; with --model, evaluate each model on its own")
    backend = generation_backend(ev.backend)  # an impossible backend is refused before any model is loaded
    evaluated = ev.model or str(resolve_checkpoint(config, checkpoint))
    test = load_processed(config.data.output_dir)["test"]
    if len(test) == 0:
        raise TrainerError(
            f"{config.data.output_dir}: the test split is empty; add examples or raise data.test_fraction"
        )
    rows = list(test)[: ev.limit]
    symbols = load_symbols(config.data.output_dir, config.evaluation.symbols)
    model, tokenizer = load_plain(config, ev.model) if ev.model else load_finetuned(config, Path(evaluated))
    prompts = build_prompts(tokenizer, rows)
    # Teacher-forced metrics need transformers whatever generates; vLLM then gets the GPU to itself.
    forced = {"finetuned": teacher_forced(model, tokenizer, rows)}
    if ev.baseline:
        with model.disable_adapter():
            forced["baseline"] = teacher_forced(model, tokenizer, rows)
    if backend == "vllm":
        del model
        answers = vllm_answers(config, evaluated, [p.token_ids for p in prompts], stop_token_ids(tokenizer))
    else:
        answers = {"finetuned": generate(model, tokenizer, prompts, ev.max_new_tokens, ev.batch_size)}
        if ev.baseline:
            with model.disable_adapter():
                answers["baseline"] = generate(model, tokenizer, prompts, ev.max_new_tokens, ev.batch_size)
    predictions = {name: prediction_records(prompts, texts) for name, texts in answers.items()}
    metrics = {name: {**forced[name], **score(predictions[name], symbols)} for name in forced}
    manifest = config.data.output_dir / "manifest.json"
    report: dict[str, Any] = {
        "checkpoint": evaluated,
        "dataset_hash": json.loads(manifest.read_text())["content_hash"] if manifest.is_file() else None,
        "generation_backend": backend,
        **metrics["finetuned"],
    }
    records = predictions["finetuned"]
    if ev.baseline:
        report["baseline"], report["delta"] = metrics["baseline"], deltas(metrics["finetuned"], metrics["baseline"])
        for record, base in zip(records, predictions["baseline"], strict=True):
            record["baseline"] = base["prediction"]
    report["config"] = config.model_dump(mode="json")
    ev.output_dir.mkdir(parents=True, exist_ok=True)
    with (ev.output_dir / "predictions.jsonl").open("w", encoding="utf-8") as out:
        for record in records:
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
