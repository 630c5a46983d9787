"""A run's artifacts in object storage, and the `trainer artifacts` commands over them.

Layout of one run, defined here once: every stage command's `--run-uri`, `trainer pipeline --run-uri`, the SkyPilot
tasks and `docker run` read and write it.

    s3://BUCKET/runs/RUN_NAME/
      run.json        status, the stage it refers to, step, metrics headline, URIs, times
      data/           the processed dataset (sky/synthesize.yaml)
      checkpoints/    every checkpoint, manifest last (training.checkpoint_uri; spot recovery resumes from here)
      eval/           report.json, predictions.jsonl
      model/          the merged model, SHA256SUMS last
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trainer.errors import Preempted, TrainerError
from trainer.redact import redact
from trainer.storage import ObjectStore, download_folder, s3_errors

RUN_RECORD = "run.json"
PARTS = {"data": "data", "checkpoints": "checkpoints", "report": "eval", "model": "model"}
FINAL_STAGE = "export"  # a run whose export finished is complete


def part_uri(run_uri: str, part: str) -> str:
    return f"{run_uri.rstrip('/')}/{PARTS[part]}"


def run_overrides(run_uri: str) -> list[str]:
    """The config keys that put a run's checkpoints and model in its layout (before the user's own `--set`s)."""
    return [
        f"training.checkpoint_uri={part_uri(run_uri, 'checkpoints')}",
        f"export.upload={part_uri(run_uri, 'model')}",
        "export.force=true",  # a recovered job re-exports over its own unfinished or older model
    ]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_run(run_uri: str) -> dict[str, Any] | None:
    try:
        return ObjectStore(run_uri).get_json(RUN_RECORD)
    except s3_errors() as exc:
        raise TrainerError(f"{run_uri}/{RUN_RECORD}: cannot read: {exc}") from None


def update_run(run_uri: str, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into the run record (created on first use) and write it back."""
    record = read_run(run_uri) or {"run_uri": run_uri, "started": _now()}
    record |= fields | {"updated": _now()}
    try:
        ObjectStore(run_uri).put_json(RUN_RECORD, record)
    except s3_errors() as exc:
        raise TrainerError(f"{run_uri}/{RUN_RECORD}: cannot write: {exc}") from None
    return record


def begin_run(run_uri: str, run_name: str, redo: bool) -> None:
    """Mark the run as running; a completed run is never redone over its artifacts unless `redo`."""
    record = read_run(run_uri)
    complete = record and record.get("status") == "complete" and record.get("stage", FINAL_STAGE) == FINAL_STAGE
    if complete and not redo:
        raise TrainerError(f"{run_uri} is a completed run; use another run name or pass --redo to run it again")
    update_run(run_uri, run_name=run_name, status="running", **{p: part_uri(run_uri, p) for p in PARTS})


@contextmanager
def recorded_stage(run_uri: str | None, stage: str, run_name: str, done: str | None = None) -> Iterator[None]:
    """Keep run.json current around one stage: running, then `done` (default: `complete` after the final stage,
    `<stage> done` after another), or `preempted` / `failed` with the error. Without a run URI, nothing."""
    if run_uri is None:
        yield
        return
    update_run(run_uri, run_name=run_name, status="running", stage=stage, **{p: part_uri(run_uri, p) for p in PARTS})
    try:
        yield
    except Preempted as exc:  # SIGTERM or notice (preempted) or Ctrl-C (interrupted), a checkpoint saved
        update_run(run_uri, status=exc.label, stage=stage, step=exc.step)
        raise
    except TrainerError as exc:
        update_run(run_uri, status="failed", stage=stage, error=redact(str(exc)))
        raise
    update_run(run_uri, status=done or ("complete" if stage == FINAL_STAGE else f"{stage} done"), stage=stage)


def list_runs(uri: str) -> list[dict[str, Any]]:
    """One row per run folder under `uri`: name, status, step, loss, size in bytes."""
    store = ObjectStore(uri)
    rows = []
    try:
        sizes: dict[str, int] = {}
        for key, size in store.objects():
            name = key.split("/", 1)[0]
            sizes[name] = sizes.get(name, 0) + size
        for name in store.folders():
            record = store.get_json(f"{name}/{RUN_RECORD}") or {}
            metrics = record.get("metrics") or {}
            rows.append(
                {
                    "run": name,
                    "status": record.get("status", "no run.json"),
                    "step": record.get("step"),
                    "loss": metrics.get("loss"),
                    "token_accuracy": metrics.get("token_accuracy"),
                    "bytes": sizes.get(name, 0),
                    "updated": record.get("updated"),
                }
            )
    except s3_errors() as exc:
        raise TrainerError(f"cannot list {uri}: {exc}") from None
    return rows


def pull_part(run_uri: str, part: str, out: Path) -> None:
    """One part of a run into `out`, verified; a part that is not there is an error naming the stage that makes it."""
    made_by = {"data": "synthesize", "checkpoints": "train", "report": "evaluate", "model": "export"}[part]
    uri = part_uri(run_uri, part)
    try:
        empty = not ObjectStore(uri).objects()
    except s3_errors() as exc:
        raise TrainerError(f"cannot list {uri}: {exc}") from None
    if empty:
        raise TrainerError(f"{uri}: nothing there yet; run `trainer {made_by} --run-uri {run_uri}` first")
    download_folder(uri, out)


def pull(uri: str, out: Path, what: str | None = None) -> tuple[int, int]:
    """Download `uri` (or one part of a run) into `out` with `download_folder`: verified, resumable, and refused
    whole when a key would escape `out`. Returns (downloaded, already present)."""
    result = download_folder(part_uri(uri, what) if what else uri.rstrip("/"), out)
    return len(result.downloaded), len(result.present)


def format_runs(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'run':<28} {'status':<16} {'step':>6} {'loss':>8} {'tok acc':>8} {'size':>10}  updated"]
    for row in rows:
        loss = f"{row['loss']:.4f}" if isinstance(row["loss"], float) else "-"
        accuracy = f"{row['token_accuracy']:.3f}" if isinstance(row["token_accuracy"], float) else "-"
        size = f"{row['bytes'] / 2**20:.1f} MiB"
        step = row["step"] if row["step"] is not None else "-"
        updated = row["updated"] or "-"
        lines.append(f"{row['run']:<28} {row['status']:<16} {step:>6} {loss:>8} {accuracy:>8} {size:>10}  {updated}")
    return "\n".join(lines)
