"""`export.formats` with `gguf`: one GGUF per `export.gguf_types` entry and its Ollama Modelfile, each verified.

The GGUF files are written from the merged safetensors in the staging folder (`gguf_file.py`), so they hold exactly
the weights the safetensors verification checked; each is then read back by transformers (`gguf_verify.py`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import AutoTokenizer

from trainer.checkpoints.sealed import trained_data
from trainer.config import Config
from trainer.dataset import load_manifest, load_processed
from trainer.export.gguf_file import write_gguf
from trainer.export.gguf_verify import GGUF_TOLERANCE, ROUND_TRIP_TEXTS, verify_gguf
from trainer.export.ollama import trained_system_prompt, write_modelfile
from trainer.export.verify import execution_device, merged_model, prompt_batch, prompt_logits


def run_system_prompt(config: Config, checkpoint: Path) -> str | None:
    """The system message every training conversation opened with, read from the processed dataset when it is the
    one the checkpoint was trained on (same content hash); None when there is none or the data is not here."""
    trained = (trained_data(checkpoint) or {}).get("content_hash")
    here = (load_manifest(config.data.output_dir) or {}).get("content_hash")
    if not trained or trained != here:
        return None
    messages = load_processed(config.data.output_dir)["train"]["messages"]
    return trained_system_prompt([json.loads(m)[:1] for m in messages])


def stop_ids(folder: Path) -> list[int]:
    """The ids generation stops at (generation_config.json's, else the tokenizer's end of sequence)."""
    path = folder / "generation_config.json"
    ids = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id") if path.is_file() else None
    if ids is None:
        ids = AutoTokenizer.from_pretrained(folder, local_files_only=True).eos_token_id
    return ids if isinstance(ids, list) else [ids]


def write_ggufs(config: Config, checkpoint: Path, folder: Path) -> dict[str, str]:
    """Write and verify every GGUF type into `folder` (which holds the merged safetensors); the card's rows."""
    ex = config.export
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    stops, system = stop_ids(folder), run_system_prompt(config, checkpoint)
    if ex.verify:
        device = execution_device()
        batch = prompt_batch(folder)
        expected = prompt_logits(merged_model(folder, device), batch, device)
    rows = {}
    for gguf_type in ex.gguf_types:
        start = time.monotonic()
        path = write_gguf(folder, gguf_type, config.training.run_name)
        write_modelfile(path, tokenizer, stops, system)
        row = f"`{path.name}`, written in {time.monotonic() - start:.1f} s"
        if ex.verify:
            difference = verify_gguf(path, gguf_type, batch, expected)
            bound = GGUF_TOLERANCE[gguf_type]
            row += (
                f"; read back by transformers: the tokenizer encodes {len(ROUND_TRIP_TEXTS)} texts identically, max "
                f"logit difference {difference:.1e} of the largest logit vs the merged model "
                + (f"(bound {bound:.0e})" if bound is not None else "(4-bit: measured, not bounded)")
            )
        rows[f"gguf {gguf_type}"] = row
    return rows
