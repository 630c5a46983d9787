"""`make quality`: does finetuning make SmolLM2-135M-Instruct know chi? Base and finetuned, same test rows.

Synthesize chi (the demo's sources and examples) → train on this CPU → `trainer evaluate --baseline` (base and
finetuned answer the same rows with the same greedy decoding) → export the merged model → write the report file
(docs/quality.md) from report.json, predictions.jsonl and general.jsonl. Everything lands in outputs/quality/chi/. A
rerun with nothing changed reuses what is done: training finds its last checkpoint complete (checkpoints trained on
other data, after the generator changed, are moved aside and the run trains again), evaluation and export are skipped
when their stamp matches (the checkpoint and its sealed weights, the dataset's content hash and the evaluation
settings: a checkpoint trained again at the same path is evaluated again), and the report keeps the wall times
measured when each stage ran. API grounding is scored again from the kept answers on
every run (a second), so a change of that scorer reaches the reports without generating them again.

More runs (`--runs chi chi-2epochs chi-before gin`) put the effect of the data apart from the training's, with the
same config and decoding: `chi-2epochs` stops chi after two epochs, `chi-4epochs` trains a fourth, `chi-before` trains
three epochs of the data mix before the fact kinds (issue 32); they answer chi's test rows (their base is chi's: the
same rows). `chi-howto` asks chi's model (and the base) the how-to questions of benchmarks/howto/, kept out of every
run's data (`data.test_examples_dir`); `chi-before-howto` asks chi-before's model the same. `gin` is a second
framework through the same benchmark, its first 248 test rows (the groups in turn). Their figures join a comparison
table in the report, and a run with its own base gets its own targets table.

What was tried to choose the settings is written by hand in benchmarks/quality_notes.md, included as it is.

Usage: python benchmarks/quality.py [--report docs/quality.md] [--config configs/training/quality.yaml]
       [--runs chi chi-2epochs chi-before gin chi-howto chi-before-howto]
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.api_index import load_symbols
from trainer.checkpoints.folder import MANIFEST
from trainer.checkpoints.resolve import resolve_checkpoint
from trainer.config_file import load_config
from trainer.data_config import GenerationMix
from trainer.dataset import conversation, load_manifest, load_processed
from trainer.dotted import lookup
from trainer.errors import TrainerError
from trainer.evaluation.general import GENERAL_FILE
from trainer.evaluation.generation import symbol_group
from trainer.evaluation.metrics import GROUPS, group_of
from trainer.evaluation.report import GROUP_TITLES, PREDICTIONS_FILE, reground
from trainer.export.merge import ADAPTER_WEIGHTS
from trainer.report_format import HEADLINES, REPORT_FILE
from trainer.synthesis.split import SPAN_WORDS, answers, sharing
from trainer.training.resume import DATASET_KEY, changes_since

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs/training/quality.yaml"
NOTES = Path("benchmarks/quality_notes.md")
STAMPS_FILE = "stamps.json"  # in the run folder: each stage's inputs and wall time when it last ran
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# General prompts: a finetuned model may answer this many fewer of them than the base (1 of 12) before it counts as
# having lost its plain answers.
GENERAL_TOLERANCE = 1 / 12
SHOWN_CHARS = 500
VERDICT = {True: "pass", False: "fail"}


@dataclass(frozen=True)
class Run:
    """One benchmark run: the config's settings with these `--set`s, in outputs/quality/<name>/."""

    name: str
    title: str
    overrides: tuple[str, ...] = ()
    answers: str | None = None  # another run whose test rows (and base answers) this one uses
    export: bool = False
    trained_by: str | None = None  # another run whose model this one evaluates: it trains none


MIX = "data.generation.mix"
# A dataset of benchmarks/howto's questions alone, for the test split: chi's API index (grounding, the compile check),
# nothing generated, no general prompts (the run of the model it evaluates answered them).
HOWTO = (
    "data.examples_dir=data/raw/examples/none", "data.test_examples_dir=benchmarks/howto",
    "data.generation.probes=false", "evaluation.general_prompts=false",
    *(f"{MIX}.{kind}=0" for kind in GenerationMix.model_fields),
)  # fmt: skip

# The config's steps are three epochs of chi's training conversations (its comment).
EPOCH_STEPS = -(-load_config(CONFIG).training.max_steps // 3)
RUNS = {
    run.name: run
    for run in (
        Run("chi", "chi, today's data mix, three epochs", export=True),
        Run(
            "chi-before", "chi, the data mix before the fact kinds, three epochs of it",
            (f"{MIX}.which_symbol=0", f"{MIX}.usage=0", f"{MIX}.call_in_context=0", f"{MIX}.contrast=0",
             f"{MIX}.no_such_api=0", f"{MIX}.what_does=1", f"{MIX}.signature=1", "data.generation.max_per_symbol=4",
             "training.max_steps=240"),
            answers="chi",
        ),
        Run(
            "chi-lr3e-4", "chi, today's data mix, one epoch at learning rate 3e-4",
            (f"training.max_steps={EPOCH_STEPS}", "training.learning_rate=3.0e-4"), "chi",
        ),
        Run("chi-1epoch", "chi, today's data mix, one epoch", (f"training.max_steps={EPOCH_STEPS}",), "chi"),
        Run("chi-2epochs", "chi, today's data mix, two epochs", (f"training.max_steps={2 * EPOCH_STEPS}",), "chi"),
        Run("chi-4epochs", "chi, today's data mix, four epochs", (f"training.max_steps={4 * EPOCH_STEPS}",), "chi"),
        Run("chi-howto", "chi, today's data mix, on how-to questions kept out of the data", HOWTO, trained_by="chi"),
        Run(
            "chi-before-howto", "chi, the data mix before the fact kinds, on the same how-to questions", HOWTO,
            "chi-howto", trained_by="chi-before",
        ),
        Run(
            "gin", "gin, today's data mix, three epochs (no hand-written examples: no how-to rows)",
            ("data.sources=[{url: /usr/share/gocode/src/github.com/gin-gonic/gin, name: gin}]",
             "data.examples_dir=data/raw/examples/none", "evaluation.limit=248",
             "training.max_steps=937"),  # three epochs of gin's 1,249 training conversations at batch 4
        ),
    )
}  # fmt: skip


def folders(run: Run) -> tuple[str, ...]:
    """The `--set`s that put a run's data, checkpoints, logs and report in its own folder."""
    out = f"outputs/quality/{run.name}"
    return (
        f"data.output_dir={out}/data", f"training.output_dir={out}/checkpoints", f"training.logging_dir={out}/logs",
        f"evaluation.output_dir={out}/report", f"export.output_dir={out}",
    )  # fmt: skip


def settings_of(run: Run) -> tuple[str, ...]:
    return (*folders(run), *run.overrides)


def config_of(config_file: Path, run: Run):
    """The config a run's stages see."""
    return load_config(config_file, settings_of(run))


def stage(config_file: Path, overrides: tuple[str, ...], *args: str) -> tuple[float, str]:
    """One `trainer` command, its output streamed and kept: (wall seconds, output)."""
    start = time.perf_counter()
    sets = [arg for override in overrides for arg in ("--set", override)]
    command = [sys.executable, "-m", "trainer.cli", *args, "--config", str(config_file), *sets]
    print("+ trainer", " ".join(args), *overrides, flush=True)
    process = subprocess.Popen(
        command, cwd=ROOT, env=os.environ | OFFLINE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    for line in process.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    if process.wait() != 0:
        sys.exit(f"error: `trainer {' '.join(args)}` failed (exit {process.returncode})")
    return time.perf_counter() - start, "".join(lines)


def model_of(checkpoint: Path) -> dict[str, str]:
    """What a stamp says of the model a stage used: its checkpoint, and the sha256 of its adapter weights from the
    checkpoint's sealed manifest (the path alone would pass a checkpoint trained again where the old one was)."""
    files = json.loads((checkpoint / MANIFEST).read_text(encoding="utf-8"))["files"]
    return {"checkpoint": str(checkpoint), "weights": files[ADAPTER_WEIGHTS]["sha256"]}


def set_aside_stale(config) -> Path | None:
    """Where a run's checkpoints trained on other data than its synthesis now makes (the generator changed), which the
    resume check refuses, are kept: moved to `<checkpoints>-<that data's hash>`, so the run trains again. Only the
    data is compared: the settings the check compares are resolved by training itself (`auto` attention, packing)."""
    try:
        checkpoint = resolve_checkpoint(config, None)
    except TrainerError:
        return None  # nothing trained yet
    changed = changes_since(checkpoint, config).get(DATASET_KEY)
    if changed is None:
        return None  # training resumes it, or finds it done
    trained = changed[0]
    name, copies = f"{config.training.output_dir.name}-{str(trained)[:12]}", 1
    aside = config.training.output_dir.with_name(name)
    while aside.exists():  # that data trained once more, and set aside again
        copies += 1
        aside = config.training.output_dir.with_name(f"{name}-{copies}")
    config.training.output_dir.rename(aside)
    print(f"quality: {config.training.output_dir} was trained on other data; kept in {aside}, training again")
    return aside


def run(config_file: Path, run: Run) -> dict[str, Any]:
    """Synthesize, train, evaluate (and export) one run, each stage skipped when its stamp says it is done; the
    stamps (inputs and wall time of each stage) are kept in the run's folder."""
    overrides = settings_of(run)
    config = load_config(config_file, overrides)
    out = ROOT / config.training.output_dir.parent
    out.mkdir(parents=True, exist_ok=True)
    stamps_path = out / STAMPS_FILE
    stamps = json.loads(stamps_path.read_text(encoding="utf-8")) if stamps_path.is_file() else {}
    if not (run.trained_by and run.answers):  # else another run's model on another run's rows: nothing of its own
        seconds, _ = stage(config_file, overrides, "synthesize")  # seconds: the Go index is cached, the rows the same
        stamps["synthesize"] = {"seconds": round(seconds)}
    if run.trained_by:
        overrides += (f"training.output_dir={config_of(config_file, RUNS[run.trained_by]).training.output_dir}",)
    else:
        set_aside_stale(config)
        seconds, said = stage(config_file, overrides, "train")
        if "nothing to train" not in said:
            stamps["train"] = {"seconds": round(seconds), "load_average": os.getloadavg()[0]}
    model = model_of(resolve_checkpoint(load_config(config_file, overrides), None))
    if run.answers:  # the other run's test rows, without its base: its report has the base's answers to them
        overrides += (f"data.output_dir={config_of(config_file, RUNS[run.answers]).data.output_dir}",
                      "evaluation.baseline=false")  # fmt: skip
    evaluated = load_config(config_file, overrides)
    data_hash = load_manifest(ROOT / evaluated.data.output_dir)["content_hash"]
    evaluation = evaluated.evaluation.model_dump(mode="json")
    wanted = {**model, "dataset_hash": data_hash, "evaluation": evaluation}
    if stamps.get("evaluate", {}).get("inputs") != wanted:
        seconds, _ = stage(config_file, overrides, "evaluate")
        stamps["evaluate"] = {"seconds": round(seconds), "inputs": wanted}
    reground(ROOT / evaluated.evaluation.output_dir, load_symbols(ROOT / evaluated.data.output_dir))
    if run.export and stamps.get("export", {}).get("inputs") != model:
        seconds, _ = stage(config_file, overrides, "export", "--out", str(out / "model"))
        stamps["export"] = {"seconds": round(seconds), "inputs": model}
    stamps_path.write_text(json.dumps(stamps, indent=2) + "\n", encoding="utf-8")
    return stamps


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


def results(config_file: Path, run: Run) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """A run's report.json and predictions.jsonl as its evaluation wrote them; None before it is evaluated."""
    folder = ROOT / config_of(config_file, run).evaluation.output_dir
    if not (folder / REPORT_FILE).is_file():
        return None
    report = json.loads((folder / REPORT_FILE).read_text(encoding="utf-8"))
    return report, [json.loads(line) for line in (folder / PREDICTIONS_FILE).open(encoding="utf-8")]


def write(config_file: Path, report_file: Path, stamps: dict[str, Any]) -> None:
    config = config_of(config_file, RUNS["chi"])
    report, records = results(config_file, RUNS["chi"])
    general = [json.loads(line) for line in (ROOT / config.evaluation.output_dir / GENERAL_FILE).open()]
    manifest = load_manifest(ROOT / config.data.output_dir)
    total = sum(stamp["seconds"] for stamp in stamps.values())
    counts = {g: report["groups"][g]["n_examples"] for g in GROUPS}
    lines = [
        "# Quality: SmolLM2-135M-Instruct before and after finetuning on chi",
        "",
        f"Written by `make quality` (`benchmarks/quality.py`) from `{config.evaluation.output_dir / REPORT_FILE}`, "
        f"`{PREDICTIONS_FILE}` and `{GENERAL_FILE}` beside it: do not edit by hand. The run folder is "
        f"`{config.training.output_dir.parent}/` (data, checkpoints, the report, the merged model in `model/`).",
        "",
        "## The run",
        "",
        *settings(config, manifest),
        f"- test rows: {report['n_examples']} ("
        + ", ".join(f"{n} {GROUP_TITLES[g]}" for g, n in counts.items())
        + f"); general prompts: {len(general)}",
        "- wall time on this machine (2 cores, shared): "
        + ", ".join(f"{name} {stamp['seconds'] / 60:.1f} min" for name, stamp in stamps.items())
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
        *other_targets(config_file),
        *comparison(config_file),
        (ROOT / NOTES).read_text(encoding="utf-8").strip(),
    ]  # fmt: skip
    report_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"quality: {report_file}")


EMPTY_TARGET = " | — | — | — | — (nothing to compare) |"  # a target row with no figure: its group has no rows


def other_targets(config_file: Path) -> list[str]:
    """The targets on each other framework's run done so far (its own rows and base), as chi's are above."""
    lines = []
    for name, one in RUNS.items():
        found = None if name == "chi" or one.answers else results(config_file, one)
        if found is None:
            continue
        report, records = found
        counts = ", ".join(f"{report['groups'][g]['n_examples']} {GROUP_TITLES[g]}" for g in GROUPS)
        lines += [f"## Targets: {one.title}", "", f"Its own test rows ({counts}) and base.", ""]
        lines += [*(row for row in targets(report, records) if not row.startswith(EMPTY_TARGET, row.find(" | "))), ""]
    return lines


COMPARED = (
    ("seen", "api_grounding.recall"), ("seen", "api_grounding.invented_rate"), ("heldout", "tool_call.call_recall"),
    ("heldout", "api_grounding.invented_rate"), ("howto", "api_grounding.recall"),
    ("howto", "api_grounding.invented_rate"), (None, "go_code.compile_rate"), (None, "general.pass_rate"),
)  # fmt: skip


def comparison(config_file: Path) -> list[str]:
    """The runs done so far side by side: each run's base and finetuned figures on the metrics the targets name."""
    reports = {name: found[0] for name, one in RUNS.items() if (found := results(config_file, one))}
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


def trained(config_file: Path, name: str) -> bool:
    """Whether the run that trains the model `name` evaluates has a complete checkpoint."""
    try:
        resolve_checkpoint(config_of(config_file, RUNS[RUNS[name].trained_by]), None)
    except TrainerError:
        return False
    return True


def trained_on(config_file: Path, run: Run) -> Path:
    """The data folder of the model a run evaluates: its own, or that of the run that trained it."""
    return ROOT / config_of(config_file, RUNS[run.trained_by] if run.trained_by else run).data.output_dir


def recitation_note(config_file: Path, reports: dict[str, Any]) -> list[str]:
    """For a run answering rows its model's data did not split (another run's, or another run's model): how many of
    those rows' answers share a span with the model's training answers (the split guarantees none only for the data
    it made)."""
    notes = []
    for name in reports:
        one = RUNS[name]
        if not (one.answers or one.trained_by):
            continue
        ours = load_processed(trained_on(config_file, one))
        theirs = load_processed(ROOT / config_of(config_file, RUNS[one.answers or name]).data.output_dir)
        test = list(theirs["test"])
        trained = (answers(conversation(row)[0]) for row in ours["train"])
        shared = sharing([answers(conversation(row)[0]) for row in test], trained)
        by_group = {g: sum(1 for i in shared if symbol_group(test[i]) == g) for g in GROUPS}
        notes.append(
            f"{one.title}: of the {len(test)} test rows it answers, {len(shared)} share a {SPAN_WORDS}-word span "
            f"with its model's training answers ("
            + ", ".join(f"{n} {GROUP_TITLES[g]}" for g, n in by_group.items())
            + ")."
        )
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=ROOT / "docs/quality.md")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=["chi"])
    args = parser.parse_args()
    os.chdir(ROOT)  # the config's relative paths are the repository's, as for every `trainer` command
    wanted = {"chi", *args.runs}  # the report is chi's; chi-before answers chi's rows
    # The model a run evaluates is trained first where it has no checkpoint; one it has is evaluated as it is.
    wanted |= {RUNS[name].trained_by for name in wanted if RUNS[name].trained_by and not trained(args.config, name)}
    stamps = {name: run(args.config, one) for name, one in RUNS.items() if name in wanted}
    write(args.config, args.report, stamps["chi"])


if __name__ == "__main__":
    main()
