"""The export stage: a self-contained folder that `AutoModelForCausalLM.from_pretrained` and vLLM load offline.

The merged weights are streamed shard by shard (`merge.py`) into a staging folder beside the target, with
`config.json`, `generation_config.json`, the tokenizer and its inference chat template, a model card and
`SHA256SUMS`; the folder is verified (`verify.py`), then renamed into place and optionally uploaded.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from trainer.checkpoints.folder import ADAPTER_CONFIG
from trainer.checkpoints.resolve import resolve_checkpoint
from trainer.checkpoints.sealed import TRAINED_CONFIG, trained_config
from trainer.config import Config
from trainer.config_file import save_config
from trainer.errors import TrainerError, first_line
from trainer.export.card import base_licence, files_table, model_card, write_checksums
from trainer.export.gguf_export import write_ggufs
from trainer.export.merge import (
    ADAPTER_WEIGHTS,
    INDEX,
    base_shards,
    nf4_round_trip,
    quantized_weight_keys,
    read_adapter_layout,
    stream_merge,
)
from trainer.export.verify import reference_model, verify_export
from trainer.model import base_model_path, load_tokenizer
from trainer.model_card import CARD
from trainer.precision import DTYPES, torch_dtype_name
from trainer.storage import upload_folder

ADAPTER_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
GENERATION_CONFIG = "generation_config.json"


def local_base(config: Config) -> Path:
    """The base model's folder: built (tiny), given (a path) or the Hub snapshot (cached after the first time)."""
    source = base_model_path(config.model)
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    patterns = ["*.safetensors", "*.json", "*.txt", "*.jinja", CARD, "LICENSE*"]
    try:
        return Path(snapshot_download(source, revision=config.model.revision, allow_patterns=patterns))
    except Exception as exc:  # the hub client raises many types for one cause: the files could not be had
        raise TrainerError(f"cannot fetch base model {source!r}: {first_line(exc)}") from None


def _publishable(folder: Path) -> None:
    """mkdtemp makes a private folder; the exported model is for serving, so give it the umask's modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def _write_merged(config: Config, checkpoint: Path, staging: Path) -> dict[str, str]:
    ex, model = config.export, config.model
    base_dir = local_base(config)
    merge_base = ex.merge_base if ex.merge_base != "auto" else ("nf4" if model.quantization else "original")
    if merge_base == "nf4" and model.quantization is None:
        raise TrainerError("export.merge_base=nf4 needs the quantization settings training used (model.quantization)")
    round_trip, keys = None, set()
    if merge_base == "nf4":
        round_trip = nf4_round_trip(model.quantization, DTYPES[config.training.precision])
        keys = quantized_weight_keys(base_dir)  # once, for the merge and for the verification's reference
    stream_merge(
        base_dir,
        read_adapter_layout(checkpoint),
        staging,
        DTYPES[ex.dtype],
        ex.max_shard_size,
        round_trip,
        quantized=keys,
    )
    model_config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    model_config.pop("quantization_config", None)
    model_config["dtype"] = torch_dtype_name(ex.dtype)
    (staging / "config.json").write_text(json.dumps(model_config, indent=2) + "\n", encoding="utf-8")
    if (base_dir / GENERATION_CONFIG).is_file():
        shutil.copy2(base_dir / GENERATION_CONFIG, staging / GENERATION_CONFIG)
    load_tokenizer(model, checkpoint).save_pretrained(staging)
    summary = {"merge": f"streamed, into the {merge_base} base weights", "dtype": ex.dtype}
    if ex.verify:
        difference = verify_export(staging, lambda: reference_model(base_dir, checkpoint, round_trip, keys), ex.dtype)
        summary["verified"] = f"max logit difference {difference:.1e} of the largest logit vs base+adapter"
    if "gguf" in ex.formats:
        summary |= write_ggufs(config, checkpoint, staging)
    if "safetensors" not in ex.formats:
        for path in [*base_shards(staging), staging / INDEX, staging / "config.json", staging / GENERATION_CONFIG]:
            path.unlink(missing_ok=True)
    card = model_card(
        config, checkpoint, base_licence(base_dir), summary, files_table(staging, config.training.run_name)
    )
    (staging / CARD).write_text(card, encoding="utf-8")
    return summary


def export_model(config: Config, checkpoint: str | Path | None = None, target: Path | None = None) -> Path:
    """The exported folder: `target`, by default `export.output_dir/RUN_NAME` (`RUN_NAME-adapter` for an adapter)."""
    checkpoint = resolve_checkpoint(config, checkpoint)
    config = trained_config(config, checkpoint)
    ex = config.export
    if target is None:
        name = config.training.run_name
        target = ex.output_dir / (f"{name}-adapter" if ex.adapter_only else name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        if ex.adapter_only:
            for name in ADAPTER_FILES:
                shutil.copy2(checkpoint / name, staging / name)
            load_tokenizer(config.model, checkpoint).save_pretrained(staging)
            summary = {"merge": "none: PEFT adapter folder"}
            base = Path(base_model_path(config.model))  # a Hub base is not downloaded just for its licence
            licence = base_licence(base) if base.is_dir() else "unknown"
            (staging / CARD).write_text(model_card(config, checkpoint, licence, summary), encoding="utf-8")
        else:
            _write_merged(config, checkpoint, staging)
        save_config(config, staging / TRAINED_CONFIG)  # the config it was trained and exported with
        write_checksums(staging)
        _publishable(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if ex.upload:
        upload_folder(target, ex.upload, force=ex.force)
    return target
