"""report.json as its readers see it: the file's name, the headline metrics (one entry each: its dotted path, its
direction, why it can be null) and how a headline value is shown. Evaluation writes the report; the summary line,
run.json, the model card and training's eval_gen_* metrics read theirs from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainer.dotted import lookup

REPORT_FILE = "report.json"


@dataclass(frozen=True)
class Headline:
    # Why the metric is null (metrics.py never makes up a 0 or a 1): report.md and the model card say so on its row
    # instead of leaving the row out, where a lone "false-call rate 0.0000" read as good.
    nothing_to_measure: str
    lower_is_better: bool = False
    teacher_forced: bool = False  # measured with the model's logits on the references, not on generated answers
    per_group: bool = True  # over the test split, so per symbol group; False: over the shipped general prompts


NO_LOGITS = "predictions scored without a model, or evaluation.teacher_forced off"
# The one list of headline metrics, in the report's order; keys are dotted paths into report.json.
HEADLINES = {
    "loss": Headline(NO_LOGITS, lower_is_better=True, teacher_forced=True),
    "perplexity": Headline(NO_LOGITS, lower_is_better=True, teacher_forced=True),
    "token_accuracy": Headline(NO_LOGITS, teacher_forced=True),
    "exact_match": Headline("no test conversations"),
    "rougeL": Headline("no reference answer has text"),
    "chrf": Headline("no reference answer has text"),
    "tool_call.call_rate": Headline("no test conversations"),
    "tool_call.call_recall": Headline("no reference answer calls a tool"),
    "tool_call.wellformed_rate": Headline("no answer attempted a tool call"),
    "tool_call.name_accuracy": Headline("no reference answer calls a tool"),
    "tool_call.args_exact": Headline("no reference answer calls a tool"),
    "tool_call.false_call_rate": Headline("every reference answer calls a tool", lower_is_better=True),
    "go_code.parse_rate": Headline("no Go code block in the answers"),
    "go_code.compile_rate": Headline("no Go code in the answers, or no framework source and Go toolchain"),
    "api_grounding.grounded_rate": Headline("no API symbol named in the answers, or no symbols.jsonl"),
    "api_grounding.invented_rate": Headline("no symbols.jsonl, or no test conversations", lower_is_better=True),
    "api_grounding.recall": Headline("no reference answer names a framework API, or no symbols.jsonl"),
    "general.pass_rate": Headline(
        "general prompts not answered (a predictions file, endpoints, vLLM, or general_prompts off)", per_group=False
    ),
}
HEADLINE = tuple(HEADLINES)
TEACHER_FORCED = tuple(key for key, entry in HEADLINES.items() if entry.teacher_forced)
# What training's eval_gen_* measures on validation prompts: the generated answers' metrics of the split's rows.
GENERATION_HEADLINE = tuple(key for key, entry in HEADLINES.items() if not entry.teacher_forced and entry.per_group)
# On held-out symbols the model should look the name up (where the row offers the tool: call_recall) or say it does
# not know: these are the headline there (the summary line and run.json add them as `heldout.<key>`).
HELDOUT_HEADLINE = ("tool_call.call_rate", "tool_call.call_recall", "api_grounding.invented_rate")


def cell(report: dict[str, Any], key: str, group: str | None = None) -> str:
    """A headline metric as shown in report.md and the model card: 4 decimals, or `—` with why nothing was there
    (with `group`, the metric of that symbol group; a bare `—` where the group is empty, which report.md says once)."""
    if group is not None:
        report = report.get("groups", {}).get(group) or {"n_examples": 0}
        if not report["n_examples"] or not HEADLINES[key].per_group:
            return "—"
    value = lookup(report, key)
    if value is None:
        return f"— ({HEADLINES[key].nothing_to_measure})"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def summary_line(report: dict[str, Any]) -> str:
    """The headline metrics the report has, on one line, with the change against the base where measured."""
    parts = [f"{report['n_examples']} test conversations"]
    for key in HEADLINE:
        value = lookup(report, key)
        if isinstance(value, int | float):
            delta = report.get("delta", {}).get(key)
            parts.append(f"{key} {value:.4g}" + (f" ({delta:+.3g} vs base)" if delta is not None else ""))
    heldout = report.get("groups", {}).get("heldout") or {}
    if heldout.get("n_examples"):
        values = [f"{key} {value:.4g}" for key in HELDOUT_HEADLINE if isinstance(value := lookup(heldout, key), float)]
        parts.append(f"held-out symbols ({heldout['n_examples']}): " + ", ".join(values or ["nothing to measure"]))
    return " · ".join(parts)


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The headline metrics as a flat mapping (dotted keys): what run.json and the model card record."""
    heldout = report.get("groups", {}).get("heldout") or {}
    return {key: lookup(report, key) for key in HEADLINE} | {
        f"heldout.{key}": lookup(heldout, key) for key in HELDOUT_HEADLINE
    }
