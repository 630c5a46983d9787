"""Which checkpoint a later stage (evaluate, export) uses: the one named (a folder or an `s3://…/checkpoint-N`,
fetched and verified), or the run's newest complete one, local or in its store."""

from __future__ import annotations

from pathlib import Path

from trainer.checkpoints.folder import ADAPTER_CONFIG, CHECKPOINT_PREFIX, MANIFEST, step_of
from trainer.checkpoints.store import CheckpointStore, checkpoint_store
from trainer.config import Config, TrainingConfig
from trainer.errors import TrainerError, first_line
from trainer.storage import s3_errors


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
    if not (checkpoint / ADAPTER_CONFIG).is_file():
        raise TrainerError(f"{checkpoint}: not an adapter checkpoint (no {ADAPTER_CONFIG})")
    return checkpoint


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
