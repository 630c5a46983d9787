"""docs/quality.md, written from the runs' reports and predictions: chi's targets and tables, five answers side by
side, each other framework's targets, every run's figures side by side, then benchmarks/quality_notes.md as it is."""

from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Any

from quality_runs import ROOT, RUNS, Results, config_of, results, trained_on

from trainer.dataset import conversation, load_manifest, load_processed
from trainer.dotted import lookup
from trainer.evaluation.general import GENERAL_FILE
from trainer.evaluation.generation import symbol_group
from trainer.evaluation.metrics import GROUPS, group_of
from trainer.evaluation.report import GROUP_TITLES, PREDICTIONS_FILE
from trainer.report_format import HEADLINES, REPORT_FILE
from trainer.synthesis.split import SPAN_WORDS, answers, sharing

NOTES = Path("benchmarks/quality_notes.md")
# General prompts: a finetuned model may answer this many fewer of them than the base (1 of 12) before it counts as
# having lost its plain answers.
GENERAL_TOLERANCE = 1 / 12
SHOWN_CHARS = 500
STAGES = ("synthesize", "train", "evaluate", "export")  # as benchmarks/quality.py runs them
VERDICT = {True: "pass", False: "fail"}


def _value(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def group_table(report: dict[str, Any], group: str | None) -> list[str]:
    """Every headline metric of one group (None: all rows), base vs finetuned and the difference."""
    ours = report if group is None else report["groups"][group]
    base = report["baseline"] if group is None else report["baseline"]["groups"][group]
    lines = ["| metric | base | finetuned | finetuned − base |", "| --- | ---: | ---: | ---: |"]
    for key, entry in HEADLINES.items():
        if not entry.per_group:
            continue
        mine, theirs = lookup(ours, key), lookup(base, key)
        change = mine - theirs if isinstance(mine, int | float) and isinstance(theirs, int | float) else None
        arrow = " (lower is better)" if entry.lower_is_better else ""
        shown_change = "—" if change is None else f"{change:+.3f}"
        lines.append(f"| {key}{arrow} | {_value(theirs)} | {_value(mine)} | {shown_change} |")
    return lines


def compiles(notes: list[str | None]) -> bool:
    return all(note is None for note in notes)


def both_write_go(records: list[dict[str, Any]]) -> tuple[int, float | None, float | None]:
    """Over the test rows where both models answered with Go code: how many, and each model's compile rate."""
    both = [r["compile"] for r in records if {"prediction", "baseline"} <= set(r.get("compile", {}))]
    if not both:
        return 0, None, None
    return (
        len(both),
        sum(compiles(c["baseline"]) for c in both) / len(both),
        sum(compiles(c["prediction"]) for c in both) / len(both),
    )


def building(records: list[dict[str, Any]], group: str) -> tuple[float | None, float | None]:
    """Over a group's rows, each model's share of answers with Go code that all builds (an answer without Go counts
    as not building): the base rarely writes Go at all, so over the rows where both do there is nothing to compare."""
    rows = [r.get("compile", {}) for r in records if group_of(r) == group]
    if not rows:
        return None, None
    return tuple(
        sum(model in c and compiles(c[model]) for c in rows) / len(rows) for model in ("baseline", "prediction")
    )


def targets(report: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, finetuned against base on the same rows: each with its goal and whether it is met (by how
    much it is missed where not)."""
    ours, base = report, report["baseline"]
    n_go, go_base, go_ours = both_write_go(records)
    # Only a row that offers the lookup tool can call it: the others (a held-out name in a question without tools)
    # measure inventions.
    n_tool = lookup(report["groups"]["heldout"], "tool_call.call_references")

    def pair(key: str, group: str | None = None) -> tuple[Any, Any]:
        return tuple(lookup(scores["groups"][group] if group else scores, key) for scores in (base, ours))

    def number(value: Any) -> bool:
        return isinstance(value, int | float)

    # The words: recall at least the base's + 0.20, inventions below the base's (on how-to rows the base
    # names no invented API, so below it cannot be met there), compile rate at least the base's.
    at_least, at_most, below = operator.ge, operator.le, operator.lt
    rows = [
        ("seen: API recall ≥ base + 0.20", *pair("api_grounding.recall", "seen"), lambda b: b + 0.20, at_least),
        ("seen: invented-API rate < base", *pair("api_grounding.invented_rate", "seen"), lambda b: b, below),
        ("how-to: API recall ≥ base + 0.20", *pair("api_grounding.recall", "howto"), lambda b: b + 0.20, at_least),
        ("how-to: invented-API rate < base", *pair("api_grounding.invented_rate", "howto"), lambda b: b, below),
        (f"held-out: lookup tool called ≥ 0.80, on the {n_tool} rows that offer it",
         *pair("tool_call.call_recall", "heldout"), lambda b: 0.80, at_least),
        ("held-out: invented-API rate ≤ base", *pair("api_grounding.invented_rate", "heldout"), lambda b: b, at_most),
        (f"compile rate ≥ base, on the {n_go} rows where both write Go", go_base, go_ours, lambda b: b, at_least),
        ("seen: answers whose Go builds ≥ base, of all rows", *building(records, "seen"), lambda b: b, at_least),
        ("how-to: answers whose Go builds ≥ base, of all rows", *building(records, "howto"), lambda b: b, at_least),
        (
            f"general prompts ≥ base − {GENERAL_TOLERANCE:.3f} (one prompt)",
            *pair("general.pass_rate"), lambda b: b - GENERAL_TOLERANCE, at_least,
        ),
    ]  # fmt: skip
    lines = ["| target | base | finetuned | goal | verdict |", "| --- | ---: | ---: | ---: | --- |"]
    for name, theirs, mine, goal_of, holds in rows:
        goal = goal_of(theirs) if number(theirs) else None
        if not number(goal) or not number(mine):
            verdict = "— (nothing to compare)"
        elif holds(round(mine, 9), round(goal, 9)):  # 0.1 + 0.20 is 0.30000000000000004 in floats: 0.3 meets it
            verdict = "met"
        else:
            verdict = f"missed by {abs(mine - goal):.3f}" if mine != goal else "missed (equal)"
        lines.append(f"| {name} | {_value(theirs)} | {_value(mine)} | {_value(goal)} | {verdict} |")
    return lines


def shown(message: dict[str, Any] | None) -> str:
    """An assistant message as quoted text: its content (cut), then its tool calls."""
    message = message or {}
    text = (message.get("content") or "").strip()
    text = text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + " …"
    calls = [f"tool call {c.get('name')}({json.dumps(c.get('arguments'))})" for c in message.get("tool_calls") or []]
    return "\n".join(filter(None, [text, *calls])) or "(empty)"


def side_by_side(records: list[dict[str, Any]]) -> list[str]:
    """Five answers: the first three seen rows, the first held-out and the first how-to row, in file order."""
    picked = [r for r in records if r.get("group", "seen") == "seen"][:3]
    picked += [r for r in records if r.get("group") == "heldout"][:1] + [
        r for r in records if r.get("group") == "howto"
    ][:1]
    lines = []
    for number, record in enumerate(picked, 1):
        question = next(m["content"] for m in reversed(record["messages"]) if m["role"] == "user")
        lines += [f"### {number}. {GROUP_TITLES[record.get('group', 'seen')]}: {question}", ""]
        for title, message in (
            ("reference", record["reference"]),
            ("base", record["baseline"]),
            ("finetuned", record["prediction"]),
        ):
            lines += [f"**{title}**", "", "````text", shown(message), "````", ""]
    return lines  # fmt: skip


def settings(config, manifest: dict[str, Any]) -> list[str]:
    t, lora = config.training, config.model.lora
    rows = manifest["counts"]["train"]
    per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps
    return [
        f"- model: `{config.model.name_or_path}`; LoRA r {lora.r}, alpha {lora.alpha}, dropout {lora.dropout}, "
        f"modules `{lora.target_modules}`; precision {t.precision}",
        f"- training: {t.max_steps} steps × {per_step} conversations (batch {t.per_device_train_batch_size} × "
        f"accumulation {t.gradient_accumulation_steps}) = {t.max_steps * per_step / rows:.2f} epochs of {rows} "
        f"training conversations; learning rate {t.learning_rate}, warmup {t.warmup_steps} steps; max_length "
        f"{t.max_length}",
        f"- evaluation: greedy, max_new_tokens {config.evaluation.max_new_tokens}, the same rows for both models",
    ]


def write(config_file: Path, report_file: Path, stamps: dict[str, Any]) -> None:
    """docs/quality.md from every run evaluated so far (each run's files read once); `stamps`: chi's."""
    config = config_of(config_file, RUNS["chi"])
    done = {name: found for name, one in RUNS.items() if (found := results(config_file, one))}
    report, records = done["chi"]
    general = [json.loads(line) for line in (ROOT / config.evaluation.output_dir / GENERAL_FILE).open()]
    manifest = load_manifest(ROOT / config.data.output_dir)
    total = sum(stamp["seconds"] for stamp in stamps.values())
    counts = {g: report["groups"][g]["n_examples"] for g in GROUPS}
    lines = [
        "# Quality: SmolLM2-135M-Instruct before and after finetuning on chi",
        "",
        f"Written by `make quality` (`benchmarks/quality.py`) from `{config.evaluation.output_dir / REPORT_FILE}`, "
        f"`{PREDICTIONS_FILE}` and `{GENERAL_FILE}` beside it: do not edit by hand. The run folder is "
        f"`{config.training.output_dir.parent}/` (data, checkpoints, the report, the merged model in `model/`). Each "
        "run's results are kept in `benchmarks/quality_results/`: on a machine without the run's checkpoints, `make "
        "quality` takes them back where its settings and data are today's, and trains again where they are not.",
        "",
        "## The run",
        "",
        *settings(config, manifest),
        f"- test rows: {report['n_examples']} ("
        + ", ".join(f"{n} {GROUP_TITLES[g]}" for g, n in counts.items())
        + f"); general prompts: {len(general)}",
        "- wall time on this machine (2 cores, shared): "
        + ", ".join(f"{name} {stamps[name]['seconds'] / 60:.1f} min" for name in STAGES if name in stamps)
        + f"; total {total / 60:.1f} min"
        + (f" (load average {stamps['train']['load_average']:.1f} when training ended)" if "train" in stamps else ""),
        "",
        "## Targets",
        "",
        *targets(report, records),
        "",
    ]
    for group in (None, *GROUPS):
        title = "all test rows" if group is None else f"{GROUP_TITLES[group]} ({counts[group]} rows)"
        lines += [f"## {title[0].upper()}{title[1:]}", "", *group_table(report, group), ""]
    passed = {m: sum(g[f"{m}_passed"] for g in general) for m in ("baseline", "prediction")}
    lines += [
        "## General prompts (not about the framework)",
        "",
        f"Passed: base {passed['baseline']} of {len(general)}, finetuned {passed['prediction']} of {len(general)}.",
        "",
        "| prompt | base | finetuned |",
        "| --- | --- | --- |",
        *[f"| {g['prompt']} | {VERDICT[g['baseline_passed']]} | {VERDICT[g['prediction_passed']]} |" for g in general],
        "",
        "## Five answers side by side",
        "",
        *side_by_side(records),
        *other_targets(done),
        *comparison(config_file, {name: report for name, (report, _) in done.items()}),
        (ROOT / NOTES).read_text(encoding="utf-8").strip(),
    ]  # fmt: skip
    report_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"quality: {report_file}")


EMPTY_TARGET = " | — | — | — | — (nothing to compare) |"  # a target row with no figure: its group has no rows


def other_targets(done: dict[str, Results]) -> list[str]:
    """The targets on each other framework's run done so far (its own rows and base), as chi's are above."""
    lines = []
    for name, (report, records) in done.items():
        one = RUNS[name]
        if name == "chi" or one.answers:
            continue
        counts = ", ".join(f"{report['groups'][g]['n_examples']} {GROUP_TITLES[g]}" for g in GROUPS)
        lines += [f"## Targets: {one.title}", "", f"Its own test rows ({counts}) and base.", ""]
        lines += [*(row for row in targets(report, records) if not row.startswith(EMPTY_TARGET, row.find(" | "))), ""]
    return lines


COMPARED = (
    ("seen", "api_grounding.recall"), ("seen", "api_grounding.invented_rate"), ("heldout", "tool_call.call_recall"),
    ("heldout", "api_grounding.invented_rate"), ("howto", "api_grounding.recall"),
    ("howto", "api_grounding.invented_rate"), (None, "go_code.compile_rate"), (None, "general.pass_rate"),
)  # fmt: skip


def comparison(config_file: Path, reports: dict[str, dict[str, Any]]) -> list[str]:
    """The runs done so far (their report.json) side by side: each run's base and finetuned figures on the metrics
    the targets name."""
    if set(reports) <= {"chi"}:
        return []
    heads = [f"{GROUP_TITLES[g]}: {k.split('.')[-1]}" if g else k.split(".")[-1] for g, k in COMPARED]
    lines = [
        "## The data mix, the epochs, the learning rate and a second framework",
        "",
        "The same config, steps and decoding but for what each run names; "
        f'`make quality QUALITY_RUNS="{" ".join(reports)}"`. Rows: seen / held-out / how-to.',
        "",
        f"| run | model | train conversations | rows | {' | '.join(heads)} |",
        "| --- | --- | ---: | --- |" + " ---: |" * len(heads),
    ]
    for name, report in reports.items():
        one = RUNS[name]
        base = reports.get(one.answers, {}).get("baseline") if one.answers else report.get("baseline")
        trained = load_manifest(trained_on(config_file, one))["counts"]["train"]
        rows = " / ".join(str(report["groups"][g]["n_examples"]) for g in GROUPS)
        for model, scores in (("base", base), ("finetuned", report)):
            if model == "base" and (scores is None or one.answers):
                continue  # a run answering another's rows has that run's base row
            figures = [_value(lookup(scores["groups"][g], k) if g else lookup(scores, k)) for g, k in COMPARED]
            lines.append(f"| {one.title} | {model} | {trained} | {rows} | {' | '.join(figures)} |")
    return [*lines, "", *recitation_note(config_file, reports), ""]


def recitation_note(config_file: Path, reports: dict[str, Any]) -> list[str]:
    """For a run answering rows its model's data did not split (another run's, or another run's model): how many of
    those rows' answers share a span with the model's training answers (the split guarantees none only for the data
    it made). Runs with the same training data and rows (the seed and epoch runs) are counted once."""
    notes = []
    counted: dict[tuple[str, str], tuple[int, int, dict[str, int]]] = {}  # by the two datasets' content hashes
    for name in reports:
        one = RUNS[name]
        if not (one.answers or one.trained_by):
            continue
        ours = trained_on(config_file, one)
        theirs = ROOT / config_of(config_file, RUNS[one.answers or name]).data.output_dir
        key = (load_manifest(ours)["content_hash"], load_manifest(theirs)["content_hash"])
        if key not in counted:
            counted[key] = recited(ours, theirs)
        rows, shared, by_group = counted[key]
        notes.append(
            f"{one.title}: of the {rows} test rows it answers, {shared} share a {SPAN_WORDS}-word span "
            f"with its model's training answers ("
            + ", ".join(f"{n} {GROUP_TITLES[g]}" for g, n in by_group.items())
            + ")."
        )
    return notes


def recited(training: Path, answered: Path) -> tuple[int, int, dict[str, int]]:
    """The count of test rows of the dataset in `answered`, and of those whose answers share a span with the training
    answers of the one in `training`, in all and by group."""
    test = list(load_processed(answered)["test"])
    trained = (answers(conversation(row)[0]) for row in load_processed(training)["train"])
    shared = sharing([answers(conversation(row)[0]) for row in test], trained)
    return len(test), len(shared), {g: sum(1 for i in shared if symbol_group(test[i]) == g) for g in GROUPS}
