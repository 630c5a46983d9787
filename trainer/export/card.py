"""What travels with an exported model: a model card (README.md) and SHA256SUMS."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from trainer.checkpoints.folder import TRAINER_STATE
from trainer.checkpoints.sealed import trained_data
from trainer.config import Config
from trainer.dataset import load_manifest
from trainer.dotted import lookup
from trainer.model_card import CARD, format_counts, loading_snippet
from trainer.report_format import HEADLINE, REPORT_FILE, cell
from trainer.storage import COMPLETE_MARKER, sha256_file


def base_licence(base_dir: Path) -> str:
    """The `license` in the base model card's front matter, or "unknown"."""
    card = base_dir / CARD
    if card.is_file():
        text = card.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            front = yaml.safe_load(text.split("---", 2)[1]) or {}
            if isinstance(front, dict) and front.get("license"):
                return str(front["license"])
    return "unknown"


def _json_or_none(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _evaluation(report: dict[str, Any] | None, checkpoint: Path) -> str:
    if report is None:
        return f"— (no evaluation of {checkpoint.name}: `trainer evaluate --checkpoint {checkpoint}`)"
    return ", ".join(
        f"{key} {value:.4g}" if isinstance(value := lookup(report, key), int | float) else f"{key} {cell(report, key)}"
        for key in HEADLINE
    )


WEIGHT_FILES = ("*.safetensors", "*.gguf", "*.Modelfile")  # listed in the card with size and sha256


def files_table(folder: Path, run_name: str) -> list[str]:
    """The card's table of the model files: name, size, sha256 (SHA256SUMS repeats the digests for every file); with
    GGUF files, the commands that run them, the Ollama model named after the run (the folder written here is a
    staging one, renamed when complete)."""
    paths = sorted({p for pattern in WEIGHT_FILES for p in folder.glob(pattern)})
    rows = [f"| `{p.name}` | {p.stat().st_size / 2**20:,.1f} MiB | `{sha256_file(p)}` |" for p in paths]
    lines = ["## Files", "", "| file | size | sha256 |", "| --- | ---: | --- |", *rows, ""]
    ggufs = [p.name for p in paths if p.suffix == ".gguf"]
    if ggufs:
        stem = ggufs[0].removesuffix(".gguf")
        lines += [
            "## Running the GGUF",
            "",
            "```sh",
            f"ollama create {run_name.lower()} -f {stem}.Modelfile && ollama run {run_name.lower()}",
            f"llama-cli -m {ggufs[0]} --jinja --temp 0 -cnv   # llama.cpp, with the chat template in the file",
            "```",
            "",
        ]
    return lines


def model_card(
    config: Config, checkpoint: Path, licence: str, merge: dict[str, str], files: list[str] | None = None
) -> str:
    """The exported folder's README.md: front matter for the Hub, what it was made from, how well, how to load it."""
    # The dataset the checkpoint was trained on (sealed in it), not whatever data.output_dir holds now.
    data = trained_data(checkpoint) or load_manifest(config.data.output_dir) or {}
    report = _json_or_none(config.evaluation.output_dir / REPORT_FILE)
    if report and Path(report.get("checkpoint", "")).name != checkpoint.name:
        report = None  # an evaluation of another checkpoint says nothing about this one
    state = _json_or_none(checkpoint / TRAINER_STATE) or {}
    front = {
        "base_model": config.model.name_or_path,
        "library_name": "transformers",
        "license": licence,
        "tags": ["trainer", "lora", "go"],
    }
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {config.training.run_name}",
        "",
        f"LoRA finetune of `{config.model.name_or_path}`, exported by trainer from `{checkpoint.name}`.",
        "",
        "| | |",
        "| --- | --- |",
        f"| base model | `{config.model.name_or_path}` (licence: {licence}) |",
        *(f"| {key} | {value} |" for key, value in merge.items()),
        f"| data | content hash `{data.get('content_hash') or '—'}`; {format_counts(data.get('counts'))} |",
        f"| steps | {state.get('global_step', '—')} of {state.get('max_steps', '—')} |",
        f"| evaluation | {_evaluation(report, checkpoint)} |",
        "",
        *(files or []),
        *(
            loading_snippet("path/to/this/folder", adapter=config.export.adapter_only)
            if config.export.adapter_only or "safetensors" in config.export.formats
            else []
        ),
        "## Training config",
        "",
        "```yaml",
        yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False),
        "```",
        "",
    ]
    return "\n".join(lines)


def write_checksums(folder: Path) -> None:
    """`sha256  relative/path` for every file, in `sha256sum -c` format; written last, it marks a complete folder."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != COMPLETE_MARKER)
    lines = [f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}" for p in files]
    (folder / COMPLETE_MARKER).write_text("\n".join(lines) + "\n", encoding="utf-8")
