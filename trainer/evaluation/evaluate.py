"""The evaluate stage: teacher-forced loss/perplexity/token accuracy on the test split, batched greedy generations
for the test prompts scored by `metrics.py`, optionally the base model on the same prompts (`--baseline`), and
`predictions.jsonl`, `report.json`, `report.md`.

The adapter is evaluated on the same base it was trained on (4-bit when the config quantizes), so the numbers
describe the function that was trained; the baseline is that base with the adapter switched off.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from trainer.api_index import load_symbols
from trainer.checkpoints import resolve_checkpoint, trained_config
from trainer.config import RESOLVED_CONFIG, Config
from trainer.config_file import save_config
from trainer.dataset import conversation, load_manifest, load_processed
from trainer.errors import TrainerError
from trainer.evaluation.generation import Decoding, build_prompts, generate, prediction_records, stop_token_ids
from trainer.evaluation.metrics import score
from trainer.evaluation.report import PREDICTIONS_FILE, deltas, write_report
from trainer.evaluation.vllm_backend import generation_backend, vllm_answers
from trainer.metrics_log import METRICS_FILE
from trainer.model import load_base_model, load_peft_model, load_tokenizer
from trainer.precision import DTYPES, resolve_precision
from trainer.progress import track
from trainer.tokenize import IGNORE_INDEX, tokenize_conversation, training_template


def load_finetuned(config: Config, checkpoint: Path):
    dtype = DTYPES[resolve_precision(config.training.precision)]
    tokenizer = load_tokenizer(config.model, checkpoint)
    base = load_base_model(config.model, dtype, quantized=True)
    model = load_peft_model(base, checkpoint, config.model)
    return model, tokenizer


def load_plain(config: Config, which: str):
    """`base`: the base model as training loaded it (4-bit when the config quantizes); else an exported folder."""
    dtype = DTYPES[resolve_precision(config.training.precision)]
    if which == "base":
        return load_base_model(config.model, dtype, quantized=True).eval(), load_tokenizer(config.model)
    if not (Path(which) / "config.json").is_file():
        raise TrainerError(f"{which}: not a model folder (no config.json); pass an exported model or `base`")
    folder = config.model.model_copy(update={"name_or_path": which, "tiny": None, "revision": None})
    return load_base_model(folder, dtype, quantized=False).eval(), load_tokenizer(folder, which)


@torch.no_grad()
def teacher_forced(model, tokenizer, rows: list[dict[str, str]]) -> dict[str, float]:
    """Token-weighted mean NLL and argmax accuracy over supervised (assistant) tokens."""
    template = training_template(tokenizer)
    nll, correct, count = 0.0, 0, 0
    for row in track(rows, description="Scoring test split"):
        ids, labels = tokenize_conversation(tokenizer, template, *conversation(row))
        logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0, :-1].float()
        target = torch.tensor(labels[1:], device=logits.device)
        keep = target != IGNORE_INDEX
        nll += torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum").item()
        correct += int((logits[keep].argmax(-1) == target[keep]).sum())
        count += int(keep.sum())
    loss = nll / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "token_accuracy": correct / count}


def evaluate(config: Config, checkpoint: str | Path | None = None) -> dict[str, Any]:
    ev = config.evaluation
    if ev.model and ev.baseline:
        raise TrainerError("--baseline compares an adapter with its base; with --model, evaluate each model on its own")
    backend = generation_backend(ev.backend)  # an impossible backend is refused before any model is loaded
    if not ev.model:
        adapter = resolve_checkpoint(config, checkpoint)
        config = trained_config(config, adapter)  # the base, quantization and precision the adapter was trained on
    evaluated = ev.model or str(adapter)
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
        answers = {"finetuned": generate(model, tokenizer, prompts, Decoding.of(ev), ev.batch_size)}
        if ev.baseline:
            with model.disable_adapter():
                answers["baseline"] = generate(model, tokenizer, prompts, Decoding.of(ev), ev.batch_size)
    predictions = {name: prediction_records(prompts, texts) for name, texts in answers.items()}
    metrics = {name: {**forced[name], **score(predictions[name], symbols)} for name in forced}
    manifest = load_manifest(config.data.output_dir)
    report: dict[str, Any] = {
        "checkpoint": evaluated,
        "dataset_hash": manifest["content_hash"] if manifest else None,
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
    with (ev.output_dir / PREDICTIONS_FILE).open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    # The checkpoint's own copy of the training log: its run up to its step. training.logging_dir holds whichever
    # run wrote last, which plotted a 200-step curve under a 2-step checkpoint's report.
    metrics_log = None if ev.model else Path(evaluated) / METRICS_FILE
    write_report(report, ev.output_dir, metrics_log if metrics_log and metrics_log.is_file() else None)
    save_config(config, ev.output_dir / RESOLVED_CONFIG)
    return report
