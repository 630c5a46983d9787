"""`make quality`: does finetuning make SmolLM2-135M-Instruct know chi? Base and finetuned, same test rows.

Synthesize chi (the demo's sources and examples) → train on this CPU → `trainer evaluate --baseline` (base and
finetuned answer the same rows with the same greedy decoding) → export the merged model → write the report file
(docs/quality.md) from report.json, predictions.jsonl and general.jsonl. Everything lands in outputs/quality/chi/. A
rerun with nothing changed reuses what is done: training finds its last checkpoint complete (checkpoints trained on
other data, after the generator changed, are moved aside and the run trains again), evaluation and export are skipped
when their stamp matches (the checkpoint and its sealed weights, the dataset's content hash and the evaluation
settings: a checkpoint trained again at the same path is evaluated again), and the report keeps the wall times
measured when each stage ran. Each run's results are kept in the repository (benchmarks/quality_results/, by
quality_store.py): where a run's model has no checkpoint here (a fresh clone), they are taken back instead of
training again when the model would be trained with the same settings on the same data and asked the same rows.
API grounding is scored again from the kept answers on every run (a second), so a change of that scorer reaches the
reports without generating them again.

More runs (`--runs chi chi-2epochs chi-before chi-seed1 gin`) put the effect of the data apart from the training's,
with the same config and decoding: `chi-2epochs` stops chi after two epochs, `chi-4epochs` trains a fourth,
`chi-before` trains three epochs of the data mix before the fact kinds (issue 32), `chi-seed1` and
`chi-before-seed1` train chi and chi-before again with another training seed (how far a figure moves by chance);
they answer chi's test rows (their base is chi's: the same rows). `chi-howto` asks chi's model (and the base) the
how-to questions of benchmarks/howto/, kept out of every run's data (`data.test_examples_dir`); `chi-before-howto`,
`chi-seed1-howto`, `chi-before-seed1-howto` and `chi-2epochs-howto` ask the other models the same. `gin` is a second
framework through the same benchmark, its first 248 test rows (the groups in turn). Their figures join a comparison
table in the report, and a run with its own base gets its own targets table.

The runs are declared in benchmarks/quality_runs.py, the report is written by benchmarks/quality_report.py; what
was tried to choose the settings is written by hand in benchmarks/quality_notes.md, included as it is.

Usage: python benchmarks/quality.py [--report docs/quality.md] [--config configs/training/quality.yaml]
       [--runs chi chi-2epochs chi-before chi-seed1 chi-before-seed1 gin chi-howto chi-before-howto …]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from quality_report import write
from quality_runs import (
    CONFIG,
    ROOT,
    RUNS,
    Run,
    checkpoint_of,
    config_of,
    evaluation_settings,
    model_run,
    model_settings,
    settings_of,
)
from quality_store import STORE, keep, take_back, trained_with

from trainer.api_index import load_symbols
from trainer.checkpoints.folder import MANIFEST
from trainer.checkpoints.resolve import resolve_checkpoint
from trainer.config_file import load_config
from trainer.dataset import load_manifest
from trainer.errors import TrainerError
from trainer.evaluation.report import reground
from trainer.export.merge import ADAPTER_WEIGHTS
from trainer.report_format import REPORT_FILE
from trainer.training.resume import DATASET_KEY, changes_since

STAMPS_FILE = "stamps.json"  # in the run folder: each stage's inputs and wall time when it last ran
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


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


def stamps_file(config_file: Path, run: Run) -> Path:
    """Where a run's stamps are kept: each stage's inputs and wall time when it last ran (or was taken back)."""
    return ROOT / config_of(config_file, run).training.output_dir.parent / STAMPS_FILE


def kept_weights(config_file: Path, run: Run) -> str | None:
    """The sha256 of the adapter `run` evaluates where its model run's results were taken back rather than trained
    here: what that run's stamps say; None where nothing says (a run evaluating its own model: any)."""
    stamps = stamps_file(config_file, model_run(run))
    if not (run.trained_by and stamps.is_file()):
        return None
    return json.loads(stamps.read_text(encoding="utf-8")).get("evaluate", {}).get("inputs", {}).get("weights")


def measure(config_file: Path, run: Run, model_wanted: bool = False, kept_only: bool = False) -> dict[str, Any] | None:
    """Synthesize, train, evaluate (and export) one run, each stage skipped when its stamp says it is done; where
    its model has no checkpoint here, its kept results are taken back when they match (quality_store.py), unless
    `model_wanted` (another run evaluates that model). The stamps (inputs and wall time of each stage) are kept in
    the run's folder, the results in the store. `kept_only` (a run not asked for): its results taken back or as
    this machine has them, never trained or evaluated; None where there are none."""
    overrides, asks = model_settings(config_file, run), evaluation_settings(config_file, run)
    stamps_path = stamps_file(config_file, run)
    stamps_path.parent.mkdir(parents=True, exist_ok=True)
    stamps = json.loads(stamps_path.read_text(encoding="utf-8")) if stamps_path.is_file() else {}
    if not (run.trained_by and run.answers):  # else another run's model on another run's rows: nothing of its own
        seconds, _ = stage(config_file, settings_of(run), "synthesize")  # the Go index is cached, the rows the same
        stamps["synthesize"] = {"seconds": round(seconds)}
    evaluated = load_config(config_file, asks)
    report_dir = ROOT / evaluated.evaluation.output_dir
    trained = trained_with(config_of(config_file, model_run(run)))
    evaluation = evaluated.evaluation.model_dump(mode="json")
    data_hash = load_manifest(ROOT / evaluated.data.output_dir)["content_hash"]
    checkpoint = checkpoint_of(config_file, run)
    kept = None
    if checkpoint is None and not model_wanted:  # else its stamps say what is done
        weights = kept_weights(config_file, run)
        kept = take_back(run.name, report_dir, trained, {"weights": weights, "dataset_hash": data_hash,
                                                         "evaluation": evaluation})  # fmt: skip
    if kept is not None:
        print(f"quality: {run.name}: its kept results match today's settings and data; taken back", flush=True)
        stamps = kept
    elif kept_only:
        if (report_dir / REPORT_FILE).is_file():
            return stamps
        print(f"quality: {run.name}: its kept results are not on today's data or settings; left out", flush=True)
        return None
    else:
        if not run.trained_by:
            set_aside_stale(config_of(config_file, run))
            seconds, said = stage(config_file, overrides, "train")
            if "nothing to train" not in said:
                stamps["train"] = {"seconds": round(seconds), "load_average": os.getloadavg()[0]}
        elif checkpoint is None:  # its model's results were taken back, not trained here: train it now
            measure(config_file, model_run(run), model_wanted=True)
        model = model_of(resolve_checkpoint(evaluated, None))
        wanted = {**model, "dataset_hash": data_hash, "evaluation": evaluation}
        if stamps.get("evaluate", {}).get("inputs") != wanted:
            seconds, _ = stage(config_file, asks, "evaluate")
            stamps["evaluate"] = {"seconds": round(seconds), "inputs": wanted}
        if run.export and stamps.get("export", {}).get("inputs") != model:
            seconds, _ = stage(config_file, overrides, "export", "--out", str(stamps_path.parent / "model"))
            stamps["export"] = {"seconds": round(seconds), "inputs": model}
    reground(report_dir, load_symbols(ROOT / evaluated.data.output_dir))  # today's scorer, on the kept answers too
    stamps_path.write_text(json.dumps(stamps, indent=2) + "\n", encoding="utf-8")
    keep(run.name, report_dir, stamps, trained)
    return stamps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=ROOT / "docs/quality.md")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=["chi"])
    args = parser.parse_args()
    os.chdir(ROOT)  # the config's relative paths are the repository's, as for every `trainer` command
    wanted = {"chi", *args.runs}  # the report is chi's; chi-before answers chi's rows
    # The model a run evaluates is trained first where it has no checkpoint; one it has is evaluated as it is.
    wanted |= {
        RUNS[name].trained_by for name in wanted if RUNS[name].trained_by and not checkpoint_of(args.config, RUNS[name])
    }
    # Every other run with kept results joins the report where they are still today's; none is trained for it.
    stamps = {
        name: measure(args.config, one, kept_only=name not in wanted)
        for name, one in RUNS.items()
        if name in wanted or (STORE / f"{name}.json.gz").is_file()
    }
    write(args.config, args.report, stamps["chi"])


if __name__ == "__main__":
    main()
