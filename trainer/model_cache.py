"""A model folder built once into `model.cache_dir` (a tiny model, a converted GGUF file), named by what it is built
from, so every later run loads it as it is."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from transformers.utils import logging as hf_logging

COMPLETE_FILE = "config.json"  # written by save_pretrained: a folder holding it is a complete model
STAGING_PREFIX = ".building-"


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """`target`, written by `build(folder)` on first use.

    Built beside the target and renamed, so a crash or a concurrent build never leaves a half-written model; where a
    concurrent build completes the target first, this one's failure to write or rename is not an error.
    """
    if (target / COMPLETE_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=STAGING_PREFIX))
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar for writing a model into the cache is noise in front of a stage's output
    try:
        build(staging)
        staging.rename(target)
    except OSError:
        if not (target / COMPLETE_FILE).is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if bars:
            hf_logging.enable_progress_bar()
    return target
