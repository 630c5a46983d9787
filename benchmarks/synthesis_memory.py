"""Benchmark synthesis memory per extracted symbol: peak RSS of `trainer synthesize` on generated Go packages of
documented constants (one symbol per two lines, the densest real code gets) at two sizes; the slope between them is
the memory each symbol costs, whatever the interpreter and libraries take at start.

Usage: python benchmarks/synthesis_memory.py [--report docs/benchmarks.md]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import append_section, report_path

# The CLI, then its own peak from /proc: VmHWM belongs to the process image after exec, whereas ru_maxrss (wait4,
# getrusage) starts from the forking parent's peak, e.g. a whole test session's.
REPORT_PEAK_RSS = """import sys
from trainer.cli import main
code = main(sys.argv[1:])
print("peak_rss_kib=" + next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmHWM:")))
sys.exit(code)
"""
DEBUG_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "training" / "debug.yaml"
SIZES = (20_000, 100_000)  # symbols, in files of 10,000 (about 550 KB each)


def write_constants_repo(root: Path, symbols: int, per_file: int = 10_000) -> None:
    root.mkdir(parents=True)
    (root / "go.mod").write_text("module example.com/consts\n")
    for start in range(0, symbols, per_file):
        numbers = range(start, min(start + per_file, symbols))
        lines = "".join(f"// C{n} is constant {n}.\nconst C{n} = {n}\n" for n in numbers)
        (root / f"consts{start // per_file}.go").write_text(f"package consts\n\n{lines}")


def synthesize_peak(source: Path, work: Path, *sets: str) -> tuple[int, int, str]:
    """(symbols extracted, peak RSS in bytes, stdout) of `trainer synthesize --source source` in a fresh process."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "examples").mkdir(exist_ok=True)
    sets = (
        f"data.output_dir={work / 'out'}",
        f"data.cache_dir={work / 'cache'}",
        f"data.examples_dir={work / 'examples'}",
        "data.sources=[]",
        *sets,
    )
    args = [sys.executable, "-c", REPORT_PEAK_RSS, "synthesize", "--config", str(DEBUG_CONFIG), "--source", str(source)]
    done = subprocess.run([*args, *(a for s in sets for a in ("--set", s))], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    symbols = int(done.stdout.split(" files, ", 1)[1].split(" symbols", 1)[0])
    return symbols, int(done.stdout.rsplit("peak_rss_kib=", 1)[1]) * 1024, done.stdout


def per_symbol(work: Path, sizes: tuple[int, int] = SIZES) -> tuple[list[tuple[int, int]], float]:
    """[(symbols, peak bytes)] at each size, and the bytes each further symbol costs (the slope)."""
    runs = []
    for size in sizes:
        write_constants_repo(work / f"src{size}", size)
        symbols, peak, _ = synthesize_peak(work / f"src{size}", work / f"run{size}")
        runs.append((symbols, peak))
    (small, small_peak), (large, large_peak) = runs
    return runs, (large_peak - small_peak) / (large - small)


def main(report: Path) -> None:
    with tempfile.TemporaryDirectory() as work:
        runs, slope = per_symbol(Path(work))
    lines = [
        "",
        f"## Synthesis memory per symbol — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores",
        "",
        "Generated packages of documented constants; peak RSS (VmHWM) of `trainer synthesize` on each, default "
        "generation settings (two conversations per constant). Command: `make bench`.",
        "",
        "| symbols | peak RSS MiB |",
        "| ---: | ---: |",
        *(f"| {symbols:,} | {peak / 2**20:.0f} |" for symbols, peak in runs),
        f"| **per further symbol** | **{slope / 1024:.1f} KiB** |",
        "",
    ]
    append_section(report, lines)


if __name__ == "__main__":
    main(report_path(__doc__))
