"""`make gpu-check`: the production path end to end, as a user runs it, on Qwen 2.5 7B's architecture.

Random weights built locally from Qwen2.5-7B's config values (nothing downloaded), the production-shaped config
(configs/training/production-tiny.yaml: default.yaml with sizes changed) at 7B sizes: synthesize, QLoRA training
with checkpoints, a SIGKILL mid-run and the resume, which must end with the adapter of an uninterrupted run;
evaluate (transformers, and vLLM where it is installed); export with verification. Every stage is the `trainer`
command in its own process. Writes stage times, supervised tokens/s, peak GPU memory and MFU to the report.

`--scale tiny` runs the same steps on the tiny model on a CPU: the tests do, so this script cannot rot before a GPU
runs it. Usage: python benchmarks/gpu_check.py [--scale 7b|7b-slice|tiny] [--report docs/gpu.md] [--work DIR]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs/training/production-tiny.yaml"
EXAMPLES = ROOT / "data/raw/examples"
# Qwen/Qwen2.5-7B-Instruct's config.json; its tokenizer is replaced by the local one (ids stay below 1024).
QWEN25_7B = (
    "{hidden_size: 3584, intermediate_size: 18944, num_hidden_layers: 28, num_attention_heads: 28, "
    "num_key_value_heads: 4, vocab_size: 1024, model_vocab_size: 152064, max_position_embeddings: 32768, "
    "initializer_range: 0.02, dtype: bf16}"
)
# 4 of 7B's 28 layers, every matrix at 7B's shape (2.0 B parameters, half in the embeddings): the same CUDA kernels and
# code paths in a few minutes, for a GPU lease too short for 7B's loads and writes of 15 GB.
QWEN25_7B_SLICE = QWEN25_7B.replace("num_hidden_layers: 28", "num_hidden_layers: 4")
# The production config's batch geometry and sequence length at 7B, a few steps.
AT_7B = {"steps": 8, "save": 4, "kill": 6, "limit": 32, "sets": ["training.max_length=2048"]}
SCALES = {  # sizes only
    "7b": {"tiny": QWEN25_7B, **AT_7B},
    "7b-slice": {"tiny": QWEN25_7B_SLICE, **AT_7B},
    "tiny": {"tiny": None, "steps": 4, "save": 2, "kill": 3, "limit": 2, "sets": []},  # the tiny model, on a CPU
}
BF16_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 125e12}


def trainer(args: list[str], env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    """One `trainer` command in its own process, as a user runs it; (seconds, result)."""
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "trainer.cli", *args], env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    return time.monotonic() - start, done


def check(done: subprocess.CompletedProcess, expected: int = 0) -> None:
    if done.returncode != expected:
        raise SystemExit(f"{' '.join(done.args[2:5])} exited {done.returncode}, not {expected}:\n{done.stderr[-4000:]}")


def overrides(work: Path, scale: dict, run: str) -> list[str]:
    sets = [f"model.cache_dir={work / 'models'}", f"data.output_dir={work / 'data'}", f"data.examples_dir={EXAMPLES}"]
    sets += [f"training.output_dir={work / run / 'checkpoints'}", f"training.logging_dir={work / run / 'logs'}"]
    sets += [f"training.max_steps={scale['steps']}", f"training.save_steps={scale['save']}", "training.wandb=false"]
    sets += [f"evaluation.output_dir={work / run / 'eval'}", f"export.output_dir={work / run / 'models'}"]
    if scale["tiny"]:
        sets.append(f"model.tiny={scale['tiny']}")
    if not Path("/usr/share/gocode/src/github.com/go-chi/chi").is_dir():
        sets.append("data.sources=[]")  # the sample examples alone where Debian's chi package is missing
    return [arg for item in [*sets, *scale["sets"]] for arg in ("--set", item)]


def adapters_equal(a: Path, b: Path) -> float:
    """The largest difference between two adapters' tensors, relative to the largest value."""
    from safetensors.torch import load_file

    first, second = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert first.keys() == second.keys()
    scale = max(t.abs().max().item() for t in second.values())
    return max((first[k] - second[k]).abs().max().item() for k in first) / scale


def gpu_facts() -> dict[str, object]:
    import torch

    if not torch.cuda.is_available():
        return {"gpu": "none (CPU)", "peak_flops": None}
    name = torch.cuda.get_device_name()
    peak = next((flops for key, flops in BF16_PEAK_FLOPS.items() if key in name), None)
    return {"gpu": name, "driver_cuda": torch.version.cuda, "peak_flops": peak}


def run_check(scale_name: str, work: Path) -> dict[str, object]:
    scale, times = SCALES[scale_name], {}
    config = ["--config", str(CONFIG)]
    times["synthesize"], done = trainer(["synthesize", *config, *overrides(work, scale, "ref")])
    check(done)
    times["train (uninterrupted)"], done = trainer(["train", *config, *overrides(work, scale, "ref")])
    check(done)
    killed = overrides(work, scale, "killed")
    times["train until SIGKILL"], done = trainer(
        ["train", *config, *killed], {"TRAINER_KILL_AT": f"step:{scale['kill']}"}
    )
    check(done, -9)
    times["train resumed"], done = trainer(["train", *config, *killed])
    check(done)
    final = f"checkpoint-{scale['steps']}"
    resume_gap = adapters_equal(work / "killed/checkpoints" / final, work / "ref/checkpoints" / final)
    backend = "auto" if importlib.util.find_spec("vllm") else "transformers"
    times[f"evaluate ({backend})"], done = trainer(
        ["evaluate", *config, *killed, "--backend", backend, "--limit", str(scale["limit"])]
    )
    check(done)
    times["export + verification"], done = trainer(["export", *config, *killed])
    check(done)
    run = json.loads((work / "ref/logs/train_run.json").read_text())
    report = json.loads((work / "killed/eval/report.json").read_text())
    return {"times": times, "train_run": run, "report": report, "resume_gap": resume_gap}


def report_lines(scale_name: str, result: dict[str, object]) -> list[str]:
    import torch

    facts, run = gpu_facts(), result["train_run"]
    seconds, data = run["train_runtime"], run["data"]["train"]
    # Tokens the run went through: one epoch's, times the epochs it trained (a fraction with max_steps).
    tokens_per_s, supervised_per_s = (data[key] * run["epoch"] / seconds for key in ("tokens", "supervised_tokens"))
    lines = [
        f"\n## gpu-check, {scale_name} scale, {datetime.date.today().isoformat()}",
        "",
        f"Machine: {facts['gpu']}; torch {torch.__version__} (CUDA {torch.version.cuda or 'none'}). "
        f"Command: `python benchmarks/gpu_check.py --scale {scale_name}` (`make gpu-check` at 7B).",
        "",
        "| stage | seconds |",
        "| --- | ---: |",
        *(f"| {stage} | {seconds:.1f} |" for stage, seconds in result["times"].items()),
        "",
        f"- Resume after SIGKILL: largest adapter difference from the uninterrupted run "
        f"{result['resume_gap']:.1e} of the largest value.",
        f"- Training: {run['global_step']} steps in {seconds:.1f} s; {tokens_per_s:.0f} tokens/s, of which "
        f"{supervised_per_s:.0f} supervised (assistant) tokens/s",
        mfu_line(run["base_parameters"], tokens_per_s, facts["peak_flops"]),
    ]
    peak = run.get("peak_gpu_memory_bytes")
    lines.append(
        f"- Peak GPU memory (max_memory_allocated): {peak / 2**30:.1f} GiB" if peak else "- Peak GPU memory: n/a"
    )
    lines.append(f"- Evaluation: loss {result['report']['loss']:.4f} on {result['report']['n_examples']} conversations")
    return lines


def mfu_line(parameters: int, tokens_per_s: float, peak_flops: float | None) -> str:
    """Model FLOPs utilisation of training: 4 × parameters per token for a frozen base (forward, and the backward
    pass's input gradients; recomputation by gradient checkpointing not counted), over the GPU's bf16 peak."""
    if not peak_flops:
        return f"- MFU: n/a (no known bf16 peak for this device; {parameters / 1e6:,.1f} M base parameters)"
    return f"- MFU: {4 * parameters * tokens_per_s / peak_flops:.1%} ({parameters / 1e6:,.1f} M base parameters)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="7b")
    parser.add_argument("--report", type=Path, default=ROOT / "docs/gpu.md")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    lines = report_lines(args.scale, run_check(args.scale, work))
    print("\n".join(lines))
    with args.report.open("a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
