"""The processed-data format every stage after synthesis reads: a `datasets.DatasetDict` saved to a folder, with
`symbols.jsonl` (the API index) and `manifest.json` (counts, drops, content hash) beside it.

Messages and tools are stored as JSON text. Arrow would otherwise merge the keys of every tool call's `arguments`
across rows into one struct, and a tool call would come back with `null` arguments it never had.
`datasets` is imported only where a dataset is read or written: scoring a predictions file needs none of it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.errors import TrainerError
from trainer.jsonl import write_jsonl

if TYPE_CHECKING:
    from datasets import DatasetDict

SPLITS = ("train", "validation", "test")
COLUMNS = ("id", "messages", "tools", "source", "provenance")
SYMBOLS_FILE = "symbols.jsonl"  # the API index; evaluation reads it for grounding
MANIFEST_FILE = "manifest.json"  # what synthesis read, kept and dropped, and the content hash


def _features():
    from datasets import Features, Value

    return Features({column: Value("string") for column in COLUMNS})


def example_id(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """Content hash of a conversation: equal content, equal id, wherever and whenever it was read."""
    canonical = json.dumps({"messages": messages, "tools": tools}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def content_hash(by_split: dict[str, list[dict[str, str]]]) -> str:
    """One hash of which conversation is in which split: equal data, equal hash."""
    content = hashlib.sha256()
    for name in SPLITS:
        for row in sorted(by_split[name], key=lambda r: r["id"]):
            content.update(f"{name}:{row['id']}\n".encode())
    return content.hexdigest()


def _in_memory(rows: list[dict[str, str]], split: str):
    """The split as an in-memory Dataset fingerprinted by its rows' content hashes. Left to itself, datasets
    fingerprints an in-memory table by serializing all of it: a second copy of the split at the run's peak."""
    import pyarrow as pa
    from datasets import Dataset, DatasetInfo
    from datasets.table import InMemoryTable

    ids = hashlib.sha256("".join(sorted(f"{row['id']}\n" for row in rows)).encode()).hexdigest()
    table = pa.table({column: pa.array([row[column] for row in rows], type=pa.string()) for column in COLUMNS})
    return Dataset(InMemoryTable(table), info=DatasetInfo(features=_features()), fingerprint=f"{split}-{ids[:32]}")


def save_processed(
    output_dir: Path, by_split: dict[str, list[dict[str, str]]], symbols: list[dict[str, Any]], manifest: dict
) -> DatasetDict:
    """Write the splits, the API index and the manifest into `output_dir`; returns the splits as a DatasetDict."""
    from datasets import DatasetDict

    dataset = DatasetDict({name: _in_memory(split, name) for name, split in by_split.items()})
    output_dir.mkdir(parents=True, exist_ok=True)
    # datasets cannot load a saved empty split back, so only non-empty ones are written; load_processed adds the rest.
    DatasetDict({name: split for name, split in dataset.items() if len(split)}).save_to_disk(str(output_dir))
    write_jsonl(output_dir / SYMBOLS_FILE, symbols)
    (output_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return dataset


def load_processed(output_dir: Path) -> DatasetDict:
    """The saved splits, or a clear error telling the user to run synthesize first."""
    from datasets import Dataset, DatasetDict

    if not (output_dir / "dataset_dict.json").is_file():
        raise TrainerError(f"{output_dir}: no processed dataset here; run `trainer synthesize` first (data.output_dir)")
    saved = DatasetDict.load_from_disk(str(output_dir))
    features = _features()
    return DatasetDict(
        {
            name: saved[name] if name in saved else Dataset.from_dict({c: [] for c in COLUMNS}, features=features)
            for name in SPLITS
        }
    )


def load_manifest(output_dir: Path) -> dict[str, Any] | None:
    """The manifest synthesis wrote beside the dataset, or None where there is none."""
    path = output_dir / MANIFEST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def is_heldout(row: dict[str, str]) -> bool:
    """Whether the row's provenance marks it as about a symbol held out of training (`"heldout": true`, which the
    split writes); hand-written rows, and every row of a dataset made before held-out symbols, have no mark."""
    provenance = json.loads(row.get("provenance") or "{}")
    return isinstance(provenance, dict) and provenance.get("heldout") is True


def is_hand_written(row: dict[str, str]) -> bool:
    """Whether the row is a hand-written example (provenance `{"file", "line"}` of its JSONL line); a generated or a
    teacher's row names its `template`."""
    provenance = json.loads(row.get("provenance") or "{}")
    return isinstance(provenance, dict) and "file" in provenance and "template" not in provenance


def conversation(row: dict[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Decode one stored row back into (messages, tools)."""
    return json.loads(row["messages"]), (json.loads(row["tools"]) if row["tools"] else None)
