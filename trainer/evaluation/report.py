"""Prediction files in and reports out: `predictions.jsonl`, `report.json`, `report.md` and its PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.api_index import SymbolIndex
from trainer.config import RESOLVED_CONFIG, Config
from trainer.config_file import save_config
from trainer.dataset import load_manifest
from trainer.errors import problems_error
from trainer.evaluation.metrics import GROUPS, score_groups
from trainer.jsonl import read_jsonl, write_jsonl
from trainer.metrics_log import read_metrics

if TYPE_CHECKING:
    from trainer.evaluation.compile import Compiler

PREDICTIONS_FILE = "predictions.jsonl"
REPORT_FILE = "report.json"
# baseline: the base model's answer; group: `seen` (default) or `heldout`, the symbol group the question belongs to
# compile: the compiler's first message per Go block of each answer (evaluation/compile.py), not read back
RECORD_KEYS = {"id", "messages", "reference", "prediction", "baseline", "group", "compile"}
# The one list of headline metrics, in the report's order; dotted paths into report.json. The summary line, the run
# record, the model card and training's eval_gen_* metrics all take theirs from here.
TEACHER_FORCED = ("loss", "perplexity", "token_accuracy")
GENERATION_HEADLINE = (
    "exact_match", "rougeL", "chrf", "tool_call.call_rate", "tool_call.wellformed_rate", "tool_call.name_accuracy",
    "tool_call.args_exact", "tool_call.false_call_rate", "go_code.parse_rate", "go_code.compile_rate",
    "api_grounding.grounded_rate", "api_grounding.invented_rate", "api_grounding.recall",
)  # fmt: skip
# Over the shipped non-framework prompts (general.py), not the test split: no symbol groups.
GENERAL_HEADLINE = ("general.pass_rate",)
HEADLINE = TEACHER_FORCED + GENERATION_HEADLINE + GENERAL_HEADLINE
LOWER_IS_BETTER = {"loss", "perplexity", "tool_call.false_call_rate", "api_grounding.invented_rate"}
GROUP_TITLES = {"seen": "seen", "heldout": "held-out"}
# On held-out symbols the model should look the name up or say it does not know: these two are the headline there
# (the summary line and run.json add them as `heldout.<key>`).
HELDOUT_HEADLINE = ("tool_call.call_rate", "api_grounding.invented_rate")
# Why a headline metric is null (metrics.py never makes up a 0 or a 1): report.md and the model card say so on its
# row instead of leaving the row out, where a lone "false-call rate 0.0000" read as good.
NOTHING_TO_MEASURE = {
    **dict.fromkeys(TEACHER_FORCED, "predictions scored without a model"),
    "exact_match": "no test conversations",
    "rougeL": "no reference answer has text",
    "chrf": "no reference answer has text",
    "tool_call.call_rate": "no test conversations",
    "tool_call.wellformed_rate": "no answer attempted a tool call",
    "tool_call.name_accuracy": "no reference answer calls a tool",
    "tool_call.args_exact": "no reference answer calls a tool",
    "tool_call.false_call_rate": "every reference answer calls a tool",
    "go_code.parse_rate": "no Go code block in the answers",
    "go_code.compile_rate": "no Go code in the answers, or no framework source and Go toolchain to compile with",
    "api_grounding.grounded_rate": "no API symbol named in the answers, or no symbols.jsonl",
    "api_grounding.invented_rate": "no symbols.jsonl, or no test conversations",
    "api_grounding.recall": "no reference answer names a framework API, or no symbols.jsonl",
    "general.pass_rate": "general prompts not answered (a predictions file, endpoints, vLLM, or general_prompts off)",
}
# Why a whole group column is empty.
EMPTY_GROUP = {
    "seen": "no test conversation about a trained symbol",
    "heldout": "no held-out test conversations (data.heldout_symbols_fraction 0, or a dataset made before it)",
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


def metric(report: dict[str, Any], dotted: str) -> Any:
    value: Any = report
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def deltas(finetuned: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    """finetuned − baseline for every headline metric both have."""
    out = {}
    for key in HEADLINE:
        ours, theirs = metric(finetuned, key), metric(baseline, key)
        if isinstance(ours, int | float) and isinstance(theirs, int | float):
            out[key] = ours - theirs
    return out


def cell(report: dict[str, Any], key: str, group: str | None = None) -> str:
    """A headline metric as shown in report.md and the model card: 4 decimals, or `—` with why nothing was there
    (with `group`, the metric of that symbol group; a bare `—` where the group is empty, which report.md says once)."""
    if group is not None:
        report = report.get("groups", {}).get(group) or {"n_examples": 0}
        if not report["n_examples"] or key in GENERAL_HEADLINE:
            return "—"
    value = metric(report, key)
    if value is None:
        return f"— ({NOTHING_TO_MEASURE[key]})"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


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
    rates = [k for k in HEADLINE if k not in ("loss", "perplexity") and isinstance(metric(report, k), float)]
    if baseline and rates:
        figure, axes = plt.subplots(figsize=(7, 3.5))
        positions = range(len(rates))
        axes.bar([p - 0.2 for p in positions], [metric(baseline, k) or 0 for k in rates], 0.4, label="base")
        axes.bar([p + 0.2 for p in positions], [metric(report, k) for k in rates], 0.4, label="finetuned")
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
    lines[-1] += ", ".join(f"{n} about {GROUP_TITLES[name]} symbols" for name, n in groups.items()) + "."
    if report.get("checkpoint"):
        lines.append(f"Model: `{report['checkpoint']}`.")
    for endpoint in report.get("endpoints", []):
        lines.append(f"Endpoint `{endpoint['label']}`: model `{endpoint['model']}` at {endpoint['url']}.")
    prefix = {name: "" if len(models) == 1 else f"{name}: " for name in models}
    headers = [h for name in models for h in (name, *(prefix[name] + GROUP_TITLES[g] for g in GROUPS))]
    headers += ["delta"] if baseline else []
    lines += ["", f"| metric | {' | '.join(headers)} |", "| --- |" + " ---: |" * len(headers)]
    for key in HEADLINE:
        arrow = " (lower is better)" if key in LOWER_IS_BETTER else ""
        cells = [cell(scores, key, group) for scores in models.values() for group in (None, *GROUPS)]
        if baseline:
            delta = report.get("delta", {}).get(key)
            cells.append("—" if delta is None else f"{delta:+.4f}")
        lines.append(f"| {key}{arrow} | {' | '.join(cells)} |")
    empty = [name for name, n in groups.items() if not n]
    lines += [f"\nEvery {GROUP_TITLES[name]} column is empty: {EMPTY_GROUP[name]}." for name in empty]
    invented = metric(report, "api_grounding.invented") or []
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


def summary_line(report: dict[str, Any]) -> str:
    """The headline metrics the report has, on one line, with the change against the base where measured."""
    parts = [f"{report['n_examples']} test conversations"]
    for key in HEADLINE:
        value = metric(report, key)
        if isinstance(value, int | float):
            delta = report.get("delta", {}).get(key)
            parts.append(f"{key} {value:.4g}" + (f" ({delta:+.3g} vs base)" if delta is not None else ""))
    heldout = report.get("groups", {}).get("heldout") or {}
    if heldout.get("n_examples"):
        values = [f"{key} {value:.4g}" for key in HELDOUT_HEADLINE if isinstance(value := metric(heldout, key), float)]
        parts.append(f"held-out symbols ({heldout['n_examples']}): " + ", ".join(values or ["nothing to measure"]))
    return " · ".join(parts)


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The headline metrics as a flat mapping (dotted keys): what run.json and the model card record."""
    heldout = report.get("groups", {}).get("heldout") or {}
    return {key: metric(report, key) for key in HEADLINE} | {
        f"heldout.{key}": metric(heldout, key) for key in HELDOUT_HEADLINE
    }
