"""Checkpoints that survive preemption: manifests, verification, an object-store mirror, retention.

A checkpoint folder counts only once its `MANIFEST.json` (every file with size and sha256) is written, last and
atomically; the remote copy gets its manifest last too. Anything else (killed mid-write, mid-upload, a missing,
truncated or altered file) is torn: skipped with a warning naming it, and the previous complete one is used.
Uploads run on one background thread so training does not wait; a failed upload is retried by the next save.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from trainer.config import Config, TrainingConfig
from trainer.config_file import AUTO, auto_keys, load_config, save_config
from trainer.dataset import load_manifest
from trainer.errors import TrainerError, first_line
from trainer.model_card import CARD, checkpoint_card
from trainer.storage import ObjectStore, s3_errors, safe_destination, sha256_file

MANIFEST = "MANIFEST.json"
TRAINED_CONFIG = "trainer_config.yaml"  # the fully resolved config the checkpoint was trained with, sealed inside it
TRAINED_DATA = "trainer_data.json"  # the processed dataset's content hash and split sizes, sealed beside it
# What a checkpoint decides for every later stage (evaluate, export, vLLM), whatever config file they are given: the
# function it trained. Everything else (where things are, limits, export dtype) comes from the command line.
TRAINED_KEYS = ("model.name_or_path", "model.revision", "model.tiny", "model.lora", "model.quantization")
TRAINED_KEYS += ("training.precision",)
# transformers' PREFIX_CHECKPOINT_DIR, spelled here so reading checkpoints imports no torch (a test keeps them equal).
CHECKPOINT_PREFIX = "checkpoint"
# Taken from the checkpoint too, but a --set may change them: the run's name names its exported model and card, so a
# tiny checkpoint exported without its config is not filed under default.yaml's 7B run name.
RUN_KEYS = ("training.run_name",)


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


def _seal(folder: Path, manifest: dict) -> None:
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
    _seal(folder, manifest)
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
        _seal(local, manifest)
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


def resolve_checkpoint(config: Config, checkpoint: str | Path | None) -> Path:
    """The given adapter checkpoint (a folder, or `s3://…/checkpoint-N`, fetched and verified into
    training.output_dir), or the newest complete one in training.output_dir or training.checkpoint_uri: evaluation
    and export on a fresh machine find what a spot training run left in S3."""
    if isinstance(checkpoint, str) and checkpoint.startswith("s3://"):
        return _fetch_named(config.training, checkpoint)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if checkpoint is not None and not checkpoint.exists():
        raise TrainerError(f"{checkpoint}: checkpoint not found")
    if checkpoint is None:
        checkpoint = checkpoint_store(config.training).latest_complete()
        if checkpoint is None:
            raise TrainerError(
                f"{config.training.output_dir}: no checkpoint found; run `trainer train` or pass --checkpoint"
            )
    if not (checkpoint / "adapter_config.json").is_file():
        raise TrainerError(f"{checkpoint}: not an adapter checkpoint (no adapter_config.json)")
    return checkpoint


def checkpoint_store(training: TrainingConfig) -> CheckpointStore:
    return CheckpointStore(
        training.output_dir,
        training.checkpoint_uri,
        training.save_total_limit,
        endpoint_url=training.checkpoint_endpoint_url,
    )


def _fetch_named(training: TrainingConfig, uri: str) -> Path:
    parent, _, name = uri.rstrip("/").rpartition("/")
    step = step_of(name)
    if step is None:
        raise TrainerError(f"{uri}: not a checkpoint URI (expected s3://…/{CHECKPOINT_PREFIX}-N)")
    store = CheckpointStore(training.output_dir, parent, endpoint_url=training.checkpoint_endpoint_url)
    try:
        fetched = store.fetch(step)
    except s3_errors() as exc:  # the bucket is unreachable or the credentials are refused
        raise TrainerError(f"{uri}: cannot fetch: {first_line(exc)}") from None
    if fetched is None:
        raise TrainerError(f"{uri}: no complete checkpoint there (no {MANIFEST})")
    return fetched


def seal_config(config: Config, folder: Path) -> None:
    """Write the config and the dataset a checkpoint was trained with into it (before its manifest, which then lists
    them): a resumed run compares against them. Its model card quotes them, in place of PEFT's template; the run's
    folder gets the same card, as the newest checkpoint's."""
    save_config(config, folder / TRAINED_CONFIG)
    manifest = load_manifest(config.data.output_dir) or {}
    data = {"content_hash": manifest.get("content_hash"), "counts": manifest.get("counts")}
    (folder / TRAINED_DATA).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    card = checkpoint_card(config, folder, data)
    (folder / CARD).write_text(card, encoding="utf-8")
    (folder.parent / CARD).write_text(card, encoding="utf-8")


def trained_data(checkpoint: Path) -> dict | None:
    """What `seal_config` recorded of the checkpoint's dataset, or None for a checkpoint made before it did."""
    path = checkpoint / TRAINED_DATA
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _set(tree: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree[part]
    tree[leaf] = value


def _contradiction(given: dict, trained: dict, key: str) -> str | None:
    """The first key at or under `key` whose given value asks for something other than what was trained: neither
    the sealed value (resolved when training began) nor `auto` where the key's type admits it; None if there is
    none."""
    mine, theirs = _get(given, key), _get(trained, key)
    if isinstance(mine, dict) and isinstance(theirs, dict):
        inner = (_contradiction(given, trained, f"{key}.{part}") for part in sorted(mine.keys() | theirs.keys()))
        return next((found for found in inner if found), None)
    asks_for_nothing = mine == AUTO and key in auto_keys()
    return None if mine == theirs or asks_for_nothing else key


def trained_config(config: Config, checkpoint: Path, warn=print) -> Config:
    """`config` with every TRAINED_KEYS value taken from the config sealed in `checkpoint`: the one place evaluate,
    export and the vLLM backend learn what was trained. An explicit `--set` that contradicts it is an error. RUN_KEYS
    come from the checkpoint too, unless a `--set` names them. A `--set` of `auto`, or of the sealed value, asks
    for nothing else and is accepted."""
    sealed = checkpoint / TRAINED_CONFIG
    if not sealed.is_file():
        warn(f"note: {checkpoint} holds no {TRAINED_CONFIG} (made before checkpoints carried their config); "
             "using the given config's model settings")  # fmt: skip
        return config
    trained = load_config(sealed).model_dump(mode="json")
    given = config.model_dump(mode="json")
    for key, given_as in config.overrides.items():
        for trained_key in TRAINED_KEYS:
            inside = trained_key == key or trained_key.startswith(key + ".") or key.startswith(trained_key + ".")
            # Only the part of the override that the checkpoint decides: `--set training={…}` sets other keys too.
            differs = _contradiction(given, trained, max(key, trained_key, key=len)) if inside else None
            if differs:
                raise TrainerError(
                    f"{given_as}: {checkpoint} was trained with {differs}={_get(trained, differs)!r}; evaluate and "
                    "export use what the checkpoint was trained with, so leave it out"
                )
    for key in TRAINED_KEYS:
        _set(given, key, _get(trained, key))
    for key in RUN_KEYS:
        if key not in config.overrides:
            _set(given, key, _get(trained, key))
    merged = Config.model_validate(given)
    merged._overrides = config.overrides
    return merged
