"""The checkpoint folder and its manifest: a folder counts only once its `MANIFEST.json` (every file with size and
sha256) is written, last and atomically. Anything else (killed mid-write, a missing, truncated or altered file) is
torn: `problem` says why, and the previous complete one is used.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from trainer.errors import TrainerError, first_line
from trainer.storage import safe_destination, sha256_file

MANIFEST = "MANIFEST.json"
# transformers' PREFIX_CHECKPOINT_DIR and TRAINER_STATE_NAME and PEFT's CONFIG_NAME, spelled here so reading
# checkpoints imports no torch (a test keeps them equal).
CHECKPOINT_PREFIX = "checkpoint"
TRAINER_STATE = "trainer_state.json"  # the step, the log history, the step intervals
ADAPTER_CONFIG = "adapter_config.json"  # what makes a folder an adapter checkpoint; it names the base model


def checkpoint_name(step: int) -> str:
    """The folder name transformers gives the checkpoint of `step`; `step_of` reads it back."""
    return f"{CHECKPOINT_PREFIX}-{step}"


def step_of(name: str) -> int | None:
    prefix, _, number = name.rpartition("-")
    return int(number) if prefix == CHECKPOINT_PREFIX and number.isdigit() else None


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """Checkpoint folders in step order, complete or not."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and step_of(p.name) is not None]
    return sorted(found, key=lambda p: step_of(p.name))


def seal_manifest(folder: Path, manifest: dict) -> None:
    """Write the manifest beside, flush it to disk, then rename it into place: it appears whole or not at all."""
    partial = folder / f".{MANIFEST}.partial"
    with partial.open("w", encoding="utf-8") as out:
        json.dump(manifest, out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, folder / MANIFEST)


def write_manifest(folder: Path) -> dict:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {
        "files": {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in files}
    }
    seal_manifest(folder, manifest)
    return manifest


class SaveFailed(Exception):
    """Writing or sealing a checkpoint failed (disk full, read-only folder, quota): training cannot go on safely."""

    def __init__(self, folder: Path, cause: BaseException):
        super().__init__(f"{folder}: {cause}")
        self.folder, self.cause = folder, cause


def abandon(failed: SaveFailed) -> str:
    """Remove the torn folder a failed save left (freeing its space) and say where the run stands, for the error."""
    if not (failed.folder / MANIFEST).is_file():
        shutil.rmtree(failed.folder, ignore_errors=True)  # may fail on a read-only folder: it is skipped as torn
    newest = next((p for p in reversed(checkpoint_dirs(failed.folder.parent)) if problem(p) is None), None)
    free = shutil.disk_usage(failed.folder.parent).free
    kept = f"{newest} is complete and a rerun resumes from it" if newest else "no earlier checkpoint exists"
    reason = f"{first_line(failed.cause)} ({free:,} bytes free there)"
    return f"cannot save {failed.folder}: {reason}; {kept} once there is room to write"


def problem(folder: Path) -> str | None:
    """Why `folder` is not a complete checkpoint, or None if it is."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "no manifest (interrupted while being written)"
    except (OSError, ValueError) as exc:
        return f"unreadable manifest ({exc})"
    for relative, expected in manifest["files"].items():
        try:
            path = safe_destination(folder, relative)
        except TrainerError as exc:
            return str(exc)
        if not path.is_file():
            return f"{relative} is missing"
        if path.stat().st_size != expected["size"]:
            return f"{relative} has {path.stat().st_size} bytes, the manifest says {expected['size']}"
        if sha256_file(path) != expected["sha256"]:
            return f"{relative} does not match its sha256"
    return None
