"""Benchmark evaluation's generation: batched (left padding, KV cache) versus one prompt at a time.

The tiny debug model, greedy, the same test prompts and max_new_tokens in both runs; the random weights rarely stop
early, so both produce the same number of tokens. Best of 3 each.

Usage: python benchmarks/generation.py [--report docs/benchmarks.md]
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from benchlib import append_section, report_path

from trainer.config_file import load_config
from trainer.evaluation.evaluate import load_plain
from trainer.evaluation.generation import Decoding, build_prompts, generate
from trainer.synthesis.synthesize import synthesize

ROOT = Path(__file__).resolve().parent.parent
PROMPTS, NEW_TOKENS, BATCH, REPEATS, TARGET = 32, 32, 16, 3, 4.0


def best_seconds(model, tokenizer, prompts, batch_size: int) -> tuple[float, list[str]]:
    times, answers = [], []
    for _ in range(REPEATS):
        start = time.perf_counter()
        answers = generate(model, tokenizer, prompts, Decoding(NEW_TOKENS), batch_size)
        times.append(time.perf_counter() - start)
    return min(times), answers


def main(report: Path) -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as work:
        config = load_config(
            ROOT / "configs/training/debug.yaml",
            [f"data.output_dir={work}/processed", f"data.cache_dir={work}/cache", "data.test_fraction=0.3"],
        )
        rows = [row for split in synthesize(config).dataset.values() for row in split][:PROMPTS]
        model, tokenizer = load_plain(config, "base")
        prompts = build_prompts(tokenizer, rows)
        sequential, one_by_one = best_seconds(model, tokenizer, prompts, 1)
        batched, together = best_seconds(model, tokenizer, prompts, BATCH)
    same = sum(a == b for a, b in zip(one_by_one, together, strict=True))
    ratio = sequential / batched
    lines = [
        "",
        f"## Generation — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores",
        "",
        f"Tiny debug model (4-bit base on CPU), {len(rows)} prompts from the demo data, greedy, {NEW_TOKENS} new "
        f"tokens, best of {REPEATS}. Command: `make bench`. Target: batched ≥ {TARGET:.0f}× the one-at-a-time loop.",
        "",
        "| path | s | prompts/s |",
        "| --- | ---: | ---: |",
        f"| one prompt at a time | {sequential:.2f} | {len(rows) / sequential:.1f} |",
        f"| batched ({BATCH} per batch, left padding, KV cache) | {batched:.2f} | {len(rows) / batched:.1f} |",
        f"| **speed-up** | **{ratio:.1f}×** | |",
        "",
        f"Identical answers in both paths: {same}/{len(rows)} (fp32; padding changes floating-point sums, so a "
        "near-tie between two tokens can flip).",
        "",
    ]
    append_section(report, lines)


if __name__ == "__main__":
    main(report_path(__doc__))
