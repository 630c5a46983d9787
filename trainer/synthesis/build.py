"""The synthesize stage: validated examples → deduplicated → split by content hash → `datasets.DatasetDict`.

Messages and tools are stored as JSON text. Arrow would otherwise merge the keys of every tool call's `arguments`
across rows into one struct, and a tool call would come back with `null` arguments it never had.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Features, Value

from trainer.config import Config, save_config
from trainer.errors import TrainerError, problems_error
from trainer.synthesis.examples import Example, load_examples

SPLITS = ("train", "validation", "test")
COLUMNS = ("id", "messages", "tools", "source")
FEATURES = Features({column: Value("string") for column in COLUMNS})


def example_id(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """Content hash of a conversation: equal content, equal id, wherever and whenever it was read."""
    canonical = json.dumps({"messages": messages, "tools": tools}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def assign_split(identifier: str, salt: str, validation_fraction: float, test_fraction: float) -> str:
    """Split from the example's own hash alone, so adding an example never moves another one."""
    digest = hashlib.sha256(f"{salt}:{identifier}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < test_fraction:
        return "test"
    if position < test_fraction + validation_fraction:
        return "validation"
    return "train"


@dataclass
class SynthesisResult:
    dataset: DatasetDict
    manifest: dict[str, Any]


def _rows(examples: list[Example]) -> tuple[list[dict[str, str]], list[str]]:
    rows, duplicates, seen = [], [], {}
    for example in examples:
        identifier = example_id(example.messages, example.tools)
        if identifier in seen:
            duplicates.append(f"{example.source}: duplicate of {seen[identifier]}")
            continue
        seen[identifier] = example.source
        rows.append(
            {
                "id": identifier,
                "messages": json.dumps(example.messages, ensure_ascii=False),
                "tools": json.dumps(example.tools, ensure_ascii=False) if example.tools else "",
                "source": example.source,
            }
        )
    return rows, duplicates


def synthesize(config: Config) -> SynthesisResult:
    data = config.data
    if data.validation_fraction + data.test_fraction >= 1:
        raise TrainerError("data.validation_fraction + data.test_fraction must leave room for a train split")
    if not data.examples_dir.is_dir():
        raise TrainerError(f"{data.examples_dir}: examples directory not found (data.examples_dir)")
    loaded = load_examples(data.examples_dir)
    if loaded.errors and data.on_error == "fail":
        raise problems_error("invalid example (--set data.on_error=skip skips and counts them)", loaded.errors)
    rows, duplicates = _rows(loaded.examples)
    if not rows:
        raise TrainerError(f"{data.examples_dir}: no valid examples found in *.jsonl files")
    by_split: dict[str, list[dict[str, str]]] = {name: [] for name in SPLITS}
    for row in rows:
        by_split[assign_split(row["id"], data.split_salt, data.validation_fraction, data.test_fraction)].append(row)
    dataset = DatasetDict(
        {
            name: Dataset.from_dict({c: [row[c] for row in split] for c in COLUMNS}, features=FEATURES)
            for name, split in by_split.items()
        }
    )
    content = hashlib.sha256()
    for name in SPLITS:
        for row in sorted(by_split[name], key=lambda r: r["id"]):
            content.update(f"{name}:{row['id']}\n".encode())
    manifest = {
        "examples_dir": str(data.examples_dir),
        "files": loaded.per_file,
        "counts": {name: len(split) for name, split in by_split.items()},
        "skipped": {"count": len(loaded.errors), "records": loaded.errors},
        "duplicates": {"count": len(duplicates), "records": duplicates},
        "normalised": {"count": len(loaded.normalised), "records": loaded.normalised},
        "content_hash": content.hexdigest(),
    }
    data.output_dir.mkdir(parents=True, exist_ok=True)
    # datasets cannot load a saved empty split back, so only non-empty ones are written; load_processed adds the rest.
    DatasetDict({name: split for name, split in dataset.items() if len(split)}).save_to_disk(str(data.output_dir))
    (data.output_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    save_config(config, data.output_dir / "resolved_config.yaml")
    return SynthesisResult(dataset=dataset, manifest=manifest)


def load_processed(output_dir: Path) -> DatasetDict:
    """The saved splits, or a clear error telling the user to run synthesize first."""
    if not (output_dir / "dataset_dict.json").is_file():
        raise TrainerError(f"{output_dir}: no processed dataset here; run `trainer synthesize` first (data.output_dir)")
    saved = DatasetDict.load_from_disk(str(output_dir))
    return DatasetDict(
        {
            name: saved[name] if name in saved else Dataset.from_dict({c: [] for c in COLUMNS}, features=FEATURES)
            for name in SPLITS
        }
    )


def conversation(row: dict[str, str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """Decode one stored row back into (messages, tools)."""
    return json.loads(row["messages"]), (json.loads(row["tools"]) if row["tools"] else None)
