"""Synthesis memory grows by a bounded amount per extracted symbol (the figure docs/reliability.md states)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from synthesis_memory import per_symbol

PER_SYMBOL_LIMIT = 13 * 1024  # bytes: 10 KiB measured between these sizes, 9.0 in `make bench`; 16 before


@pytest.mark.slow
def test_memory_per_symbol_is_bounded(tmp_path):
    runs, slope = per_symbol(tmp_path, (5_000, 25_000))
    print(f"peaks {[(symbols, peak // 2**20) for symbols, peak in runs]} MiB: {slope / 1024:.1f} KiB per symbol")
    assert [symbols for symbols, _ in runs] == [5_000, 25_000]
    assert slope < PER_SYMBOL_LIMIT
