"""`make quality`'s measured results, kept in the repository: benchmarks/quality_results/<run>.json.gz holds a run's
evaluation files as its evaluation wrote them (report.json, predictions.jsonl, general.jsonl), its stamps (each
stage's inputs and wall time) and what its model was trained with (the model and training settings, the data's
content hash).

outputs/ is not kept: a fresh clone has no run folder, and the whole benchmark takes longer than one sitting on a
2-core machine. Where a run's folder has no report and no checkpoint, its kept results are taken back instead of
training and evaluating again, when the model would be trained with the same settings on the same data and asked
the same rows with the same settings: training on a CPU repeats itself (docs/quality.md's notes), so the same inputs
give the same answers. Any difference, and the run trains and evaluates as before; its results are then kept again.
What is not compared, as for a checkpoint found in the run's folder: the training and evaluation code and the pinned
libraries. After a change there that moves answers, delete the runs' files here (or their folders) to measure again.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from quality_runs import ROOT

from trainer.config import Config
from trainer.dataset import load_manifest
from trainer.evaluation.general import GENERAL_FILE
from trainer.evaluation.report import PREDICTIONS_FILE
from trainer.report_format import REPORT_FILE
from trainer.training.resume import DATASET_KEY, trained_settings

STORE = ROOT / "benchmarks/quality_results"
KEPT_FILES = (REPORT_FILE, PREDICTIONS_FILE, GENERAL_FILE)  # what benchmarks/quality_report.py reads


def trained_with(config: Config) -> dict[str, Any]:
    """What a model trained with this config (its own run's, not an evaluating run's) is trained with."""
    manifest = load_manifest(ROOT / config.data.output_dir) or {}
    return {**trained_settings(config), DATASET_KEY: manifest.get("content_hash")}


def evaluated_with(stamps: dict[str, Any]) -> dict[str, Any]:
    """What an evaluation stamp says of the rows and settings, less the model's folder (a path on one machine)."""
    inputs = stamps.get("evaluate", {}).get("inputs", {})
    return {key: inputs.get(key) for key in ("weights", "dataset_hash", "evaluation")}


def keep(name: str, report_dir: Path, stamps: dict[str, Any], trained: dict[str, Any], store: Path = STORE) -> None:
    """Write a run's results to the store (gzip with no timestamp: the same results give the same bytes)."""
    files = {
        file: (report_dir / file).read_text(encoding="utf-8") for file in KEPT_FILES if (report_dir / file).is_file()
    }
    kept = {"trained_with": trained, "stamps": stamps, "files": files}
    store.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(kept, indent=1, sort_keys=True).encode()
    (store / f"{name}.json.gz").write_bytes(gzip.compress(payload, mtime=0))


def take_back(
    name: str, report_dir: Path, trained: dict[str, Any], evaluated: dict[str, Any], store: Path = STORE
) -> dict[str, Any] | None:
    """A run's kept stamps, its files written back to `report_dir`, when its model was trained with `trained` and
    evaluated with `evaluated` (weights, rows and settings; the weights None: any, where no checkpoint says which);
    None otherwise."""
    path = store / f"{name}.json.gz"
    if not path.is_file():
        return None
    kept = json.loads(gzip.decompress(path.read_bytes()))
    said = evaluated_with(kept["stamps"])
    if kept["trained_with"] != trained or any(value not in (None, said[key]) for key, value in evaluated.items()):
        return None
    report_dir.mkdir(parents=True, exist_ok=True)
    for file, text in kept["files"].items():
        (report_dir / file).write_text(text, encoding="utf-8")
    return kept["stamps"]
