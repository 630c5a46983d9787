"""What every benchmark script shares: its `--report` option and appending its section to the report."""

from __future__ import annotations

import argparse
from pathlib import Path


def report_path(doc: str) -> Path:
    """The `--report` file from the command line (default docs/benchmarks.md); `doc` is the script's docstring."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--report", type=Path, default=Path("docs/benchmarks.md"))
    return parser.parse_args().report


def set_args(overrides: list[str]) -> list[str]:
    """`--set` arguments for each `dotted.key=value` override (tests/helpers.py has the same for the tests)."""
    return [arg for item in overrides for arg in ("--set", item)]


def append_section(report: Path, lines: list[str]) -> None:
    """Print a section and append it to the report."""
    text = "\n".join(lines)
    print(text)
    with report.open("a", encoding="utf-8") as out:
        out.write(text + "\n")
