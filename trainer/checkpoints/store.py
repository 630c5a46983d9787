"""The checkpoints of one run mirrored to an object store, and retention: the remote copy gets its manifest last,
so an interrupted upload is torn there too and skipped with a warning naming it. Uploads run on one background
thread so training does not wait; a failed upload is retried by the next save. The newest complete checkpoint to
resume from is the local one or a remote one downloaded and verified.
"""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from trainer.checkpoints.folder import (
    MANIFEST,
    checkpoint_dirs,
    checkpoint_name,
    problem,
    seal_manifest,
    step_of,
    write_manifest,
)
from trainer.config import TrainingConfig
from trainer.errors import TrainerError
from trainer.storage import ObjectStore, safe_destination, sha256_file


class CheckpointStore:
    """The checkpoints of one run: `output_dir` locally, mirrored to `uri` when one is given."""

    def __init__(
        self, output_dir: Path, uri: str | None = None, keep: int | None = None, warn=print, endpoint_url=None
    ):
        self.output_dir, self.keep, self.warn = output_dir, keep, warn
        self.remote = ObjectStore(uri, endpoint_url) if uri else None
        self.uploads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-upload")
        self.pending: list[Future] = []
        self.lock = threading.Lock()

    # --- finding the checkpoint to resume from -------------------------------------------------------------

    def _remote_steps(self) -> list[int]:
        if self.remote is None:
            return []
        try:
            return sorted(s for s in map(step_of, self.remote.folders()) if s is not None)
        except Exception as exc:  # an unreachable store must not stop a resume from local checkpoints
            self.warn(f"warning: cannot list {self.remote.uri}: {exc}; using local checkpoints only")
            return []

    def fetch(self, step: int) -> Path | None:
        """Make the local copy of remote `checkpoint-step` complete: keep matching local files, download the rest."""
        name = checkpoint_name(step)
        manifest = self.remote.get_json(f"{name}/{MANIFEST}")
        if manifest is None:
            self.warn(f"warning: skipping {self.remote.uri}/{name}: no manifest (upload interrupted)")
            return None
        local = self.output_dir / name
        # Every path is checked before anything is written: a manifest naming a file outside the folder (a tampered
        # bucket) makes the whole checkpoint skipped. Each file is either a local one matching its sha256 or a
        # download checked against it (which raises on a mismatch): the folder is complete once the loop ends.
        targets = {relative: safe_destination(local, relative) for relative in manifest["files"]}
        for relative, expected in manifest["files"].items():
            path = targets[relative]
            if path.is_file() and path.stat().st_size == expected["size"] and sha256_file(path) == expected["sha256"]:
                continue
            self.remote.download(f"{name}/{relative}", path, expected["sha256"])
        seal_manifest(local, manifest)
        return local

    def latest_complete(self) -> Path | None:
        """The newest complete checkpoint, local or remote (downloaded and verified), warning about torn ones."""
        local = {step_of(p.name): p for p in checkpoint_dirs(self.output_dir)}
        remote = set(self._remote_steps())
        for step in sorted(set(local) | remote, reverse=True):
            if step in local:
                reason = problem(local[step])
                if reason is None:
                    return local[step]
                self.warn(f"warning: skipping torn checkpoint {local[step]}: {reason}")
            if step in remote:
                try:
                    fetched = self.fetch(step)
                except Exception as exc:
                    self.warn(f"warning: skipping {self.remote.uri}/{checkpoint_name(step)}: {exc}")
                    continue
                if fetched is not None:
                    return fetched
        return None

    # --- publishing a new checkpoint --------------------------------------------------------------------------

    def publish(self, folder: Path, before_manifest=None) -> None:
        """Seal a checkpoint transformers has just written, then mirror it in the background and apply retention."""
        if before_manifest:
            before_manifest(folder)
        write_manifest(folder)
        if self.remote is None:
            self._retain()
            return
        self.pending = [f for f in self.pending if not f.done()]
        self.pending.append(self.uploads.submit(self._upload, folder))

    def _upload(self, folder: Path) -> bool:
        """Upload files, then the manifest; True on success. A failure leaves nothing that looks complete."""
        from trainer.failpoints import maybe_kill

        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            for number, (relative, entry) in enumerate(manifest["files"].items()):
                self.remote.upload(folder / relative, f"{folder.name}/{relative}", entry["sha256"])
                if number == 0:
                    maybe_kill("upload", step_of(folder.name))
            self.remote.put_json(f"{folder.name}/{MANIFEST}", manifest)
            maybe_kill("uploaded", step_of(folder.name))
        except Exception as exc:  # the next save uploads a newer checkpoint; nothing visible is corrupted
            self.warn(f"warning: upload of {folder.name} to {self.remote.uri} failed: {exc}; the next save retries")
            return False
        try:
            self._retain()
        except Exception as exc:  # retention is housekeeping: report it, never fail the run over it
            self.warn(f"warning: removing old checkpoints from {self.remote.uri} failed: {exc}")
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for background uploads; True if all finished within `timeout` and the last one succeeded."""
        from concurrent.futures import wait

        _, not_done = wait(self.pending, timeout=timeout)
        return not not_done and (not self.pending or self.pending[-1].result())

    def finish(self, folder: Path) -> None:
        """At the end of training: the final checkpoint must reach the store; one synchronous retry, then an error."""
        if self.remote is None or self.wait():
            return
        if not self._upload(folder):
            raise TrainerError(
                f"training finished, but {folder.name} could not be uploaded to {self.remote.uri}; it is complete "
                f"locally at {folder}: run `trainer train` again to retry the upload"
            )

    # --- retention ---------------------------------------------------------------------------------------------

    def _retain(self) -> None:
        """Keep the `keep` newest complete checkpoints, locally and remotely; never the newest complete one."""
        if not self.keep:
            return
        with self.lock:
            sealed_remote = self._remote_sealed() if self.remote is not None else {}
            complete = [p for p in checkpoint_dirs(self.output_dir) if (p / MANIFEST).is_file()]
            for old in complete[: -self.keep]:
                # A local checkpoint goes only once its remote copy is sealed: it may be the only complete one.
                if self.remote is None or step_of(old.name) in sealed_remote:
                    shutil.rmtree(old, ignore_errors=True)
            if self.remote is None or not sealed_remote:
                return
            kept = sorted(sealed_remote)[-self.keep :]
            by_step = self._remote_keys()
            # Older sealed ones beyond `keep`, and torn ones older than the newest kept: never the newest complete.
            for step in [s for s in by_step if s not in kept and s < max(kept)]:
                keys = by_step[step]
                # The manifest goes first, so a half-deleted checkpoint is never taken for a complete one.
                self.remote.delete([k for k in keys if k.endswith(f"/{MANIFEST}")])
                self.remote.delete([k for k in keys if not k.endswith(f"/{MANIFEST}")])

    def _remote_keys(self) -> dict[int, list[str]]:
        """Every remote checkpoint's keys, by step, from one listing."""
        by_step: dict[int, list[str]] = {}
        for key in self.remote.list():
            step = step_of(key.split("/", 1)[0])
            if step is not None:
                by_step.setdefault(step, []).append(key)
        return by_step

    def _remote_sealed(self) -> set[int]:
        return {step for step, keys in self._remote_keys().items() if f"{checkpoint_name(step)}/{MANIFEST}" in keys}


def checkpoint_store(training: TrainingConfig) -> CheckpointStore:
    return CheckpointStore(
        training.output_dir,
        training.checkpoint_uri,
        training.save_total_limit,
        endpoint_url=training.checkpoint_endpoint_url,
    )
