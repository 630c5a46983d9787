"""Resuming with a changed config or dataset: what differs from what the checkpoint was trained with is named;
what cannot change mid-run is refused, the rest applies.

transformers restores the optimizer, the schedule's state, the data order's RNG and its own step intervals from the
checkpoint, so a changed learning rate or batch shape would silently not apply (or would train a different model
than either config describes); the step intervals it restores from trainer_state.json are set back to the config's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from trainer.checkpoints.sealed import TRAINED_CONFIG, TRAINED_KEYS, trained_data
from trainer.config import Config
from trainer.config_file import load_config
from trainer.dataset import load_manifest
from trainer.dotted import flatten
from trainer.errors import TrainerError

# What a run cannot change mid-way: what the checkpoint trained (the model and its adapter's shape, the precision it
# trains in), the batch geometry and order, and the optimizer and schedule transformers restores from the checkpoint.
FIXED = (
    *TRAINED_KEYS, "training.per_device_train_batch_size", "training.gradient_accumulation_steps",
    "training.max_length", "training.packing", "training.group_by_length", "training.seed", "training.optim",
    "training.learning_rate", "training.lr_scheduler_type", "training.warmup_steps", "training.weight_decay",
)  # fmt: skip
# Where things are and how they are reported, not what is trained: never compared.
PLACES = (
    "model.cache_dir", "training.output_dir", "training.logging_dir", "training.resume", "training.checkpoint_uri",
    "training.checkpoint_endpoint_url", "training.run_name", "training.wandb", "training.wandb_project",
)  # fmt: skip
DATASET_KEY = "dataset content hash"


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def trained_settings(config: Config) -> dict[str, Any]:
    """Every model and training key of a config, flattened, but where things are and how they are reported (PLACES):
    what a model trained with this config is trained with."""
    sections = {s: v for s, v in config.model_dump(mode="json").items() if s in ("model", "training")}
    return {key: value for key, value in flatten(sections).items() if not _under(key, PLACES)}


def changes_since(checkpoint: Path, config: Config) -> dict[str, tuple[Any, Any]]:
    """{key: (trained with, now)} for every model and training key, and the dataset's content hash, that differ
    from what `checkpoint` was trained with; {} for a checkpoint made before checkpoints carried their config."""
    if not (checkpoint / TRAINED_CONFIG).is_file():
        return {}
    before, now = trained_settings(load_config(checkpoint / TRAINED_CONFIG)), trained_settings(config)
    changed = {key: (before.get(key), now.get(key)) for key in sorted(before.keys() | now.keys())
               if before.get(key) != now.get(key)}  # fmt: skip
    sealed, manifest = trained_data(checkpoint), load_manifest(config.data.output_dir)
    if sealed and manifest and sealed.get("content_hash") != manifest.get("content_hash"):
        changed[DATASET_KEY] = (sealed.get("content_hash"), manifest.get("content_hash"))
    return changed


def check_resume(checkpoint: Path, config: Config) -> str:
    """The line that announces the resume, naming the changes that apply; a TrainerError naming every change that
    cannot apply mid-run."""
    changed = changes_since(checkpoint, config)
    described = {key: f"{key} {old!r} → {new!r}" for key, (old, new) in changed.items()}
    fixed = [described[key] for key in changed if key == DATASET_KEY or _under(key, FIXED)]
    if fixed:
        raise TrainerError(
            f"cannot resume from {checkpoint}: changed since it was trained, and fixed for a run: {'; '.join(fixed)}."
            " Put them back to resume, or --set training.resume=never to start over (it removes the earlier "
            "checkpoints)"
        )
    if not changed:
        return f"resuming from {checkpoint}"
    return f"resuming from {checkpoint} with the config's {', '.join(described.values())}"


class ConfigStepIntervals(TrainerCallback):
    """transformers takes logging/eval/save step intervals from the resumed trainer_state.json; the config's win."""

    def on_train_begin(self, args, state, control, **kwargs):
        state.logging_steps, state.eval_steps, state.save_steps = args.logging_steps, args.eval_steps, args.save_steps


def same_on_every_process(resume: Path | None) -> None:
    """A TrainerError on every process unless all of them resume from the same step (or none does). A node that
    could not fetch the checkpoint the others found (a warning names why) would start over while they resume: the
    processes would train different steps and the first to finish would leave the others waiting in a collective."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    found: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(found, resume.name if resume else None)
    if len(set(found)) > 1:
        named = ", ".join(f"rank {rank}: {name or 'none'}" for rank, name in enumerate(found))
        raise TrainerError(
            f"the processes of this run found different checkpoints to resume from ({named}); "
            "see the warnings above for why one was skipped, then restart the job"
        )
