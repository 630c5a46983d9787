"""The export stage: the LoRA adapter merged into the full-precision base, saved as a self-contained folder
(sharded safetensors, config, generation config, tokenizer with its chat template) that
`AutoModelForCausalLM.from_pretrained` and vLLM load offline.

After QLoRA the merge goes into the original high-precision weights, not the 4-bit ones (merging into 4-bit
weights and re-quantizing loses precision); the folder is written beside the target and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from peft import PeftModel

from trainer.config import Config, save_config
from trainer.training.model import DTYPES, load_base_model, load_tokenizer
from trainer.training.train import resolve_checkpoint


def merge_adapter(config: Config, checkpoint: Path):
    """Base (fp32, unquantized) + adapter → a plain transformers model with the LoRA update folded in."""
    base = load_base_model(config.model, torch.float32, quantized=False)
    return PeftModel.from_pretrained(base, str(checkpoint)).merge_and_unload()


def _publishable(folder: Path) -> None:
    """mkdtemp makes a private folder; the exported model is for serving, so give it the umask's modes."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def export_model(config: Config, checkpoint: Path | None = None) -> Path:
    checkpoint = resolve_checkpoint(config, checkpoint)
    target = config.export.output_dir / config.training.run_name
    merged = merge_adapter(config, checkpoint).to(DTYPES[config.export.dtype])
    tokenizer = load_tokenizer(config.model, checkpoint)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        merged.save_pretrained(staging, max_shard_size=config.export.max_shard_size)
        tokenizer.save_pretrained(staging)
        save_config(config, staging / "trainer_config.yaml")
        _publishable(staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
