"""Compile rate: does an answer's Go code build against the framework at the indexed commit?

The compile check teacher conversations pass does the work (`go.check.check_snippets`: each fenced block wrapped
only where that is sound, batched `go vet`, the compiler's lines for a failure). The framework is every Go source of
the dataset's manifest, in the folder synthesis indexed (`root`: a local folder, or its clone of the recorded commit
under data.cache_dir). A block compiles when it builds against one of them (the first source first). Every block is
checked once per evaluation, in batches, whichever model or group it came from.

Without a Go toolchain, for a dataset without Go sources, or where a source's folder is not on this machine (data
pulled from a run made elsewhere), there is no compiler and the compile rate is null.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.api_index import go_blocks
from trainer.config import Config
from trainer.dataset import load_manifest
from trainer.go.check import CACHE_FOLDER, CheckTarget, SnippetResult, check_snippets

# predictions.jsonl: per model ("prediction", "baseline"), one entry per fenced Go block of its answer, in order:
# null where the block compiled, else the compiler's first line for it.
COMPILE_KEY = "compile"


@dataclass
class Compiler:
    targets: list[CheckTarget]
    work_dir: Path
    known: dict[str, SnippetResult] = field(default_factory=dict)

    def check(self, blocks: Iterable[str]) -> None:
        """Compiles the blocks not checked yet: one batched call per framework target."""
        pending = list(dict.fromkeys(b for b in blocks if b not in self.known))
        for target in self.targets:
            if not pending:
                break
            for block, result in zip(pending, check_snippets(pending, target, self.work_dir), strict=True):
                if result.ok or block not in self.known:  # the first source's message is the one kept
                    self.known[block] = result
            pending = [block for block in pending if not self.known[block].ok]

    def result(self, block: str) -> SnippetResult:
        if block not in self.known:
            self.check([block])
        return self.known[block]

    def first_message(self, block: str) -> str | None:
        """None when the block compiles, else the first line of why not."""
        result = self.result(block)
        return None if result.ok else (result.message.strip().splitlines() or ["does not compile"])[0]


def compiler_for(config: Config) -> Compiler | None:
    """The compiler for the dataset at `data.output_dir` (its manifest's Go sources), or None (module doc)."""
    manifest = load_manifest(config.data.output_dir)
    roots = [Path(entry.get("root") or "") for entry in (manifest or {}).get("sources") or []]
    if not roots or not all(root.is_dir() and root != Path() for root in roots) or shutil.which("go") is None:
        return None
    targets = [CheckTarget(e["import_path"], root) for e, root in zip(manifest["sources"], roots, strict=True)]
    return Compiler(targets, config.data.cache_dir / CACHE_FOLDER)


def compile_notes(records: list[dict[str, Any]], compiler: Compiler | None) -> None:
    """Adds to each record with Go code the compiler's first message per block (`COMPILE_KEY`), for the predictions
    file: which answers failed, and why, without rerunning go."""
    if compiler is None:
        return
    for record in records:
        notes = {}
        for model in ("prediction", "baseline"):
            blocks = go_blocks((record.get(model) or {}).get("content") or "")
            if blocks:
                notes[model] = [compiler.first_message(block) for block in blocks]
        if notes:
            record[COMPILE_KEY] = notes
