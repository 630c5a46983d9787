"""Benchmark Go extraction on gin (Debian's golang-github-gin-gonic-gin-dev): cold throughput and the cached rerun.

Cold: the walk, reading and tree-sitter parsing of every file, with an empty cache. Cached: the same call again with
nothing changed, served from the index cache (the walk and a stat of each file still run). Best of 5 each.

Usage: python benchmarks/go_extraction.py [--report docs/benchmarks.md]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from benchlib import append_section, report_path

from trainer.data_config import GenerationSettings, GoSource
from trainer.go.repo import index_repo

GIN = Path("/usr/share/gocode/src/github.com/gin-gonic/gin")
REPEATS = 5
TARGET = 10.0


def timed_index(cache: Path) -> tuple[float, int, int, bool]:
    start = time.perf_counter()
    index, cached = index_repo(GIN, GoSource(url=str(GIN)), "gin", GenerationSettings(), cache)
    return time.perf_counter() - start, index.files, index.bytes, cached


def main(report: Path) -> None:
    if not GIN.is_dir():
        raise SystemExit(f"{GIN} is missing: run `make go-sources`")
    cold, warm = [], []
    with tempfile.TemporaryDirectory() as work:
        for _ in range(REPEATS):
            cache = Path(work) / "cache"
            shutil.rmtree(cache, ignore_errors=True)
            seconds, files, size, cached = timed_index(cache)
            assert not cached
            cold.append(seconds)
            seconds, _, _, cached = timed_index(cache)
            assert cached
            warm.append(seconds)
    best_cold, best_warm = min(cold), min(warm)
    ratio = best_cold / best_warm
    lines = [
        "",
        f"## Go extraction — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores",
        "",
        f"gin 1.8.1 from Debian: {files} files read, {size / 1e6:.2f} MB (internal/ and testdata/ excluded by the "
        f"default policy). Best of {REPEATS}. Command: `make bench`. Target: cached rerun ≥ {TARGET:.0f}× faster.",
        "",
        "| run | s | files/s | MB/s |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {label} | {seconds:.4f} | {files / seconds:.0f} | {size / 1e6 / seconds:.1f} |"
            for label, seconds in (
                ("cold (walk + tree-sitter parse)", best_cold),
                ("cached, nothing changed", best_warm),
            )
        ),
        f"| **speed-up of the cached rerun** | **{ratio:.1f}×** | | |",
        "",
    ]
    append_section(report, lines)


if __name__ == "__main__":
    main(report_path(__doc__))
