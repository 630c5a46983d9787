"""The data figures of a processed folder (docs/synthesis.md, "Facts several ways"): conversations per split and per
kind, conversations per symbol, the usage compile check, held-out leakage and recitation.

Leakage is the number of training and validation rows that name a held-out symbol (`SymbolIndex.referenced`, as the
split reads names) or carry the held-out mark: the split guarantees 0.

Usage: python benchmarks/data_figures.py data/processed
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trainer.api_index import SymbolIndex
from trainer.dataset import SYMBOLS_FILE, is_heldout, load_manifest, load_processed


def _text(row: dict[str, str]) -> str:
    """Every turn but the system one, tool-call arguments included."""
    messages = json.loads(row["messages"])
    return "\n".join(
        (m.get("content") or "") + json.dumps(m.get("tool_calls") or "") for m in messages if m["role"] != "system"
    )


def figures(folder: Path) -> list[str]:
    manifest, dataset = load_manifest(folder), load_processed(folder)
    if manifest is None:
        raise SystemExit(f"error: {folder}: no manifest.json (run `trainer synthesize` first)")
    symbols = [json.loads(line) for line in (folder / SYMBOLS_FILE).open(encoding="utf-8")]
    held = set(manifest["heldout"]["names"])
    index = SymbolIndex(s for s in symbols if f"{s['package']}.{s['name']}" in held)
    leaked = sum(
        1
        for split in ("train", "validation")
        for row in dataset[split]
        if is_heldout(row) or index.referenced(_text(row))
    )
    generated, recitation = manifest["generated"], manifest["recitation"]
    lines = [
        f"conversations: {manifest['counts']}",
        f"by kind: {dict(sorted(generated['by_template'].items()))}",
        f"per symbol: {generated['facts']['conversations_per_symbol']}",
        f"symbols reached: {dict(sorted(generated['facts']['symbols_with'].items()))}",
    ]
    for source in manifest["sources"]:
        usage = {key: value for key, value in (source.get("usage") or {}).items() if key != "not_read"}
        lines.append(f"usage of {source['source']}: {usage}")
    lines.append(
        f"held out: {manifest['heldout']['symbols']} symbols, {manifest['heldout']['conversations']} conversations, "
        f"leakage {leaked}"
    )
    seen = recitation["by_group"]["seen"]["test_answers"]
    lines.append(f"recitation: {recitation['sharing_span']} of {recitation['test_answers']} ({seen} seen)")
    return lines


if __name__ == "__main__":
    print("\n".join(figures(Path(sys.argv[1] if len(sys.argv) > 1 else "data/processed"))))
