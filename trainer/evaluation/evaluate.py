"""The evaluate stage: teacher-forced loss/perplexity/token accuracy on the test split, batched greedy generations
for the test prompts scored by `metrics.py`, both over all test conversations and over each symbol group (seen,
held-out), optionally the base model on the same prompts (`--baseline`), and `predictions.jsonl`, `report.json`,
`report.md`. OpenAI-compatible servers are scored by `endpoint.py` instead.

The adapter is evaluated on the same base it was trained on (4-bit when the config quantizes), so the numbers
describe the function that was trained; the baseline is that base with the adapter switched off.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from trainer.checkpoints.resolve import resolve_checkpoint
from trainer.checkpoints.sealed import trained_config
from trainer.config import Config
from trainer.dataset import conversation
from trainer.errors import TrainerError
from trainer.evaluation.compile import compile_notes, compiler_for
from trainer.evaluation.general import GENERAL_FILE, general_prompts, general_records, general_score
from trainer.evaluation.generation import (
    Decoding,
    build_prompts,
    evaluation_data,
    generate,
    prediction_records,
    render,
    stop_token_ids,
    symbol_group,
)
from trainer.evaluation.metrics import GROUPS, score_groups
from trainer.evaluation.report import PREDICTIONS_FILE, deltas, finish_report, write_predictions
from trainer.evaluation.vllm_backend import generation_backend, vllm_answers
from trainer.jsonl import write_jsonl
from trainer.metrics_log import METRICS_FILE
from trainer.model import load_base_model, load_peft_model, load_tokenizer
from trainer.precision import DTYPES, resolve_precision
from trainer.progress import track
from trainer.report_format import TEACHER_FORCED
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


NOT_FORCED = {name: dict.fromkeys(TEACHER_FORCED) for name in ("all", *GROUPS)}  # evaluation.teacher_forced off


def _forced(nll: float, correct: int, count: int) -> dict[str, float | None]:
    if not count:
        return dict.fromkeys(TEACHER_FORCED)
    loss = nll / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "token_accuracy": correct / count}


@torch.no_grad()
def teacher_forced(model, tokenizer, rows: list[dict[str, str]]) -> dict[str, dict[str, float | None]]:
    """Token-weighted mean NLL and argmax accuracy over supervised (assistant) tokens: over all rows (`all`) and
    over each symbol group's rows."""
    template = training_template(tokenizer)
    totals = {name: [0.0, 0, 0] for name in ("all", *GROUPS)}
    for row in track(rows, description="Scoring test split"):
        ids, labels = tokenize_conversation(tokenizer, template, *conversation(row), source=row["source"])
        logits = model(input_ids=torch.tensor([ids], device=model.device), use_cache=False).logits[0, :-1].float()
        target = torch.tensor(labels[1:], device=logits.device)
        keep = target != IGNORE_INDEX
        nll = torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum").item()
        correct = int((logits[keep].argmax(-1) == target[keep]).sum())
        for name in ("all", symbol_group(row)):
            totals[name] = [a + b for a, b in zip(totals[name], (nll, correct, int(keep.sum())), strict=True)]
    return {name: _forced(*total) for name, total in totals.items()}


def with_forced(scores: dict[str, Any], forced: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """Generation scores (from `score_groups`) with the teacher-forced metrics of all rows and of each group."""
    groups = {name: {**forced[name], **group} for name, group in scores["groups"].items()}
    return {**forced["all"], **scores, "groups": groups}


def general_answers(model, tokenizer, decoding: Decoding, batch_size: int, baseline: bool) -> list[dict[str, Any]]:
    """The shipped general prompts answered by the model (and, with `baseline`, by its base: the adapter off)."""
    prompts, expected = general_prompts()
    render(tokenizer, prompts)
    answers = {"prediction": generate(model, tokenizer, prompts, decoding, batch_size)}
    if baseline:
        with model.disable_adapter():
            answers["baseline"] = generate(model, tokenizer, prompts, decoding, batch_size)
    return general_records(prompts, expected, answers)


def evaluate(config: Config, checkpoint: str | Path | None = None) -> dict[str, Any]:
    ev = config.evaluation
    if ev.model and ev.baseline:
        raise TrainerError("--baseline compares an adapter with its base; with --model, evaluate each model on its own")
    backend = generation_backend(ev.backend)  # an impossible backend is refused before any model is loaded
    if not ev.model:
        adapter = resolve_checkpoint(config, checkpoint)
        config = trained_config(config, adapter)  # the base, quantization and precision the adapter was trained on
    evaluated = ev.model or str(adapter)
    rows, symbols = evaluation_data(config)
    model, tokenizer = load_plain(config, ev.model) if ev.model else load_finetuned(config, Path(evaluated))
    prompts = build_prompts(tokenizer, rows)
    # Teacher-forced metrics need transformers whatever generates; vLLM then gets the GPU to itself.
    forced = {"finetuned": teacher_forced(model, tokenizer, rows) if ev.teacher_forced else NOT_FORCED}
    if ev.baseline:
        with model.disable_adapter():
            forced["baseline"] = teacher_forced(model, tokenizer, rows) if ev.teacher_forced else NOT_FORCED
    general: list[dict[str, Any]] = []
    if backend == "vllm":
        del model
        answers = vllm_answers(config, evaluated, [p.token_ids for p in prompts], stop_token_ids(tokenizer))
    else:
        answers = {"finetuned": generate(model, tokenizer, prompts, Decoding.of(ev), ev.batch_size)}
        if ev.baseline:
            with model.disable_adapter():
                answers["baseline"] = generate(model, tokenizer, prompts, Decoding.of(ev), ev.batch_size)
        if ev.general_prompts:
            general = general_answers(model, tokenizer, Decoding.of(ev), ev.batch_size, ev.baseline)
    predictions = {name: prediction_records(prompts, texts) for name, texts in answers.items()}
    compiler = compiler_for(config)
    metrics = {name: with_forced(score_groups(predictions[name], symbols, compiler), forced[name]) for name in forced}
    ev.output_dir.mkdir(parents=True, exist_ok=True)
    (ev.output_dir / GENERAL_FILE).unlink(missing_ok=True)  # an earlier run's answers are not this model's
    if general:
        write_jsonl(ev.output_dir / GENERAL_FILE, general)
        for name, model_key in (("finetuned", "prediction"), ("baseline", "baseline")):
            if name in metrics:
                metrics[name]["general"] = general_score(general, model_key)
    scores, records = metrics["finetuned"], predictions["finetuned"]
    if ev.baseline:
        scores = {**scores, "baseline": metrics["baseline"], "delta": deltas(metrics["finetuned"], metrics["baseline"])}
        for record, base in zip(records, predictions["baseline"], strict=True):
            record["baseline"] = base["prediction"]
    compile_notes(records, compiler)
    write_predictions(records, ev.output_dir / PREDICTIONS_FILE)
    # The checkpoint's own copy of the training log: its run up to its step. training.logging_dir holds whichever
    # run wrote last, which plotted a 200-step curve under a 2-step checkpoint's report.
    metrics_log = None if ev.model else Path(evaluated) / METRICS_FILE
    metrics_log = metrics_log if metrics_log and metrics_log.is_file() else None
    return finish_report(config, {"checkpoint": evaluated}, backend, scores, metrics_log)
