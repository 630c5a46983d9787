"""Prediction files in and reports out: `predictions.jsonl`, `report.json`, `report.md` and its PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.api_index import SymbolIndex
from trainer.config import RESOLVED_CONFIG, Config
from trainer.config_file import save_config
from trainer.dataset import load_manifest
from trainer.dotted import lookup
from trainer.errors import problems_error
from trainer.evaluation.metrics import GROUPS, grounding_metrics, group_of, score_groups
from trainer.jsonl import read_jsonl, write_jsonl
from trainer.metrics_log import METRICS_FILE, read_metrics
from trainer.report_format import HEADLINE, HEADLINES, REPORT_FILE, cell

if TYPE_CHECKING:
    from trainer.evaluation.compile import Compiler

PREDICTIONS_FILE = "predictions.jsonl"
# baseline: the base model's answer; group: `seen` (default) or `heldout`, the symbol group the question belongs to
# compile: the compiler's first message per Go block of each answer (evaluation/compile.py), not read back
RECORD_KEYS = {"id", "messages", "reference", "prediction", "baseline", "group", "compile"}
GROUP_TITLES = {"seen": "seen", "heldout": "held-out", "howto": "how-to"}
GROUP_COUNTS = {"seen": "about seen symbols", "heldout": "about held-out symbols", "howto": "hand-written how-to"}
# Why a whole group column is empty.
EMPTY_GROUP = {
    "seen": "no test conversation about a trained symbol",
    "heldout": "no held-out test conversations (data.heldout_symbols_fraction 0, or a dataset made before it)",
    "howto": "no hand-written example in the test split (or a predictions file without groups)",
}


def _message_problem(value: Any, key: str) -> str | None:
    if not isinstance(value, dict):
        return f"'{key}' must be an assistant message object"
    if not isinstance(value.get("content", ""), str | type(None)):
        return f"'{key}.content' must be a string"
    calls = value.get("tool_calls", [])
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        return f"'{key}.tool_calls' must be a list of objects"
    return None


def load_predictions(path: Path) -> list[dict[str, Any]]:
    """Records of a predictions file; every bad line is reported as `file:line: reason`, all at once."""
    if not path.is_file():
        raise problems_error("cannot score predictions", [f"{path}: file not found"])
    records, problems = [], []
    required = {"reference", "prediction"}
    for where, record, problem in read_jsonl(path):
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        if not isinstance(record, dict) or set(record) - RECORD_KEYS or not required <= set(record):
            problems.append(f"{where}: expected an object with keys {sorted(RECORD_KEYS)}, {sorted(required)} required")
            continue
        if record.get("group", "seen") not in GROUPS:
            problems.append(f"{where}: 'group' must be one of {list(GROUPS)}, got {record['group']!r}")
            continue
        problem = _message_problem(record["reference"], "reference") or _message_problem(
            record["prediction"], "prediction"
        )
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        records.append(record)
    if problems:
        raise problems_error("invalid predictions file", problems)
    if not records:
        raise problems_error("cannot score predictions", [f"{path}: no records"])
    return records


def write_predictions(records: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, records)


def deltas(finetuned: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    """finetuned − baseline for every headline metric both have."""
    out = {}
    for key in HEADLINE:
        ours, theirs = lookup(finetuned, key), lookup(baseline, key)
        if isinstance(ours, int | float) and isinstance(theirs, int | float):
            out[key] = ours - theirs
    return out


def _plots(report: dict[str, Any], out_dir: Path, records: list[dict[str, Any]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    valid = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if train or valid:
        figure, axes = plt.subplots(figsize=(6, 3.5))
        for points, label in ((train, "train"), (valid, "validation")):
            if points:
                axes.plot(*zip(*points, strict=True), marker="o" if label == "validation" else None, label=label)
        axes.set(xlabel="step", ylabel="loss (assistant tokens)", title="Training")
        axes.legend()
        figure.tight_layout()
        figure.savefig(out_dir / "loss.png", dpi=110)
        plt.close(figure)
        written.append("loss.png")
    baseline = report.get("baseline")
    rates = [k for k in HEADLINE if k not in ("loss", "perplexity") and isinstance(lookup(report, k), float)]
    if baseline and rates:
        figure, axes = plt.subplots(figsize=(7, 3.5))
        positions = range(len(rates))
        axes.bar([p - 0.2 for p in positions], [lookup(baseline, k) or 0 for k in rates], 0.4, label="base")
        axes.bar([p + 0.2 for p in positions], [lookup(report, k) for k in rates], 0.4, label="finetuned")
        axes.set_xticks(list(positions), [k.split(".")[-1] for k in rates], rotation=35, ha="right")
        axes.set(ylim=(0, 1), title="Base vs finetuned")
        axes.legend()
        figure.tight_layout()
        figure.savefig(out_dir / "metrics.png", dpi=110)
        plt.close(figure)
        written.append("metrics.png")
    return written


def write_report(report: dict[str, Any], out_dir: Path, metrics_log: Path | None = None) -> None:
    """report.json, and report.md with a table: for each model (the evaluated one, the base with --baseline, the
    compared endpoints) its value over all test conversations, then over seen and held-out symbols; the delta
    against the base last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    baseline = report.get("baseline") or {}
    models = {report.get("label") or ("finetuned" if baseline or report.get("compared") else "all"): report}
    models |= {"base": baseline} if baseline else {}
    models |= report.get("compared") or {}
    groups = {name: report.get("groups", {}).get(name, {}).get("n_examples", 0) for name in GROUPS}
    lines = ["# Evaluation", "", f"{report['n_examples']} test conversations: "]
    lines[-1] += ", ".join(f"{n} {GROUP_COUNTS[name]}" for name, n in groups.items()) + "."
    if report.get("checkpoint"):
        lines.append(f"Model: `{report['checkpoint']}`.")
    for endpoint in report.get("endpoints", []):
        lines.append(f"Endpoint `{endpoint['label']}`: model `{endpoint['model']}` at {endpoint['url']}.")
    prefix = {name: "" if len(models) == 1 else f"{name}: " for name in models}
    headers = [h for name in models for h in (name, *(prefix[name] + GROUP_TITLES[g] for g in GROUPS))]
    headers += ["delta"] if baseline else []
    lines += ["", f"| metric | {' | '.join(headers)} |", "| --- |" + " ---: |" * len(headers)]
    for key in HEADLINE:
        arrow = " (lower is better)" if HEADLINES[key].lower_is_better else ""
        cells = [cell(scores, key, group) for scores in models.values() for group in (None, *GROUPS)]
        if baseline:
            delta = report.get("delta", {}).get(key)
            cells.append("—" if delta is None else f"{delta:+.4f}")
        lines.append(f"| {key}{arrow} | {' | '.join(cells)} |")
    empty = [name for name, n in groups.items() if not n]
    lines += [f"\nEvery {GROUP_TITLES[name]} column is empty: {EMPTY_GROUP[name]}." for name in empty]
    invented = lookup(report, "api_grounding.invented") or []
    if invented:
        lines += ["", f"Invented APIs ({len(invented)}): " + ", ".join(f"`{name}`" for name in invented[:50])]
    records = read_metrics(metrics_log) if metrics_log else []
    lines += ["", *[f"![{name}]({name})" for name in _plots(report, out_dir, records)]]
    if records:
        lines.append(f"Training curve: `{metrics_log}`, steps {records[0]['step']}–{records[-1]['step']}.")
    lines.append(f"Per-example results: `{PREDICTIONS_FILE}`. Metric definitions: docs/evaluation.md.")
    (out_dir / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def finish_report(
    config: Config,
    evaluated: dict[str, Any],
    backend: str,
    scores: dict[str, Any],
    metrics_log: Path | None = None,
) -> dict[str, Any]:
    """report.json's layout, written with report.md and the resolved config beside them: what was evaluated (the
    checkpoint or model; the endpoints), the dataset's content hash, the generation backend, the scores, and the
    config last."""
    manifest = load_manifest(config.data.output_dir)
    report = {
        **evaluated,
        "dataset_hash": manifest["content_hash"] if manifest else None,
        "generation_backend": backend,
        **scores,
        "config": config.model_dump(mode="json"),
    }
    write_report(report, config.evaluation.output_dir, metrics_log)
    save_config(config, config.evaluation.output_dir / RESOLVED_CONFIG)
    return report


def score_predictions(
    path: Path, symbols: Path | None, out_dir: Path, compiler: Compiler | None = None
) -> dict[str, Any]:
    """Score a predictions file made anywhere (vLLM, another trainer) without loading a model (its Go code compiled
    with `compiler` where given)."""
    index = SymbolIndex.load(symbols) if symbols else None
    report = {"predictions": str(path), **score_groups(load_predictions(path), index, compiler)}
    write_report(report, out_dir)
    return report


def reground(out_dir: Path, index: SymbolIndex) -> dict[str, Any]:
    """A written report with its API grounding scored again from its predictions.jsonl (the finetuned answers and,
    where kept, the base's), every other score kept: for answers generated before the scorer changed, which cost
    minutes a model to generate again and a second to score."""
    report = json.loads((out_dir / REPORT_FILE).read_text(encoding="utf-8"))
    records = load_predictions(out_dir / PREDICTIONS_FILE)
    models = [(report, "prediction")] + ([(report["baseline"], "baseline")] if report.get("baseline") else [])
    for scores, answer in models:
        answered = [{**record, "prediction": record[answer]} for record in records]
        scores["api_grounding"] = grounding_metrics(answered, index)
        for group in GROUPS:
            mine = [record for record in answered if group_of(record) == group]
            scores["groups"][group]["api_grounding"] = grounding_metrics(mine, index)
    if report.get("baseline"):
        report["delta"] = deltas(report, report["baseline"])
    metrics_log = Path(report.get("checkpoint") or out_dir) / METRICS_FILE  # the curve report.md plots, as evaluate's
    write_report(report, out_dir, metrics_log if metrics_log.is_file() else None)
    return report
