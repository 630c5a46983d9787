"""Benchmark the streamed merge against PEFT's `merge_and_unload` + `save_pretrained`, the streamed verification
against loading both models whole, and the two merge bases.

1. A random Qwen2-architecture model of ~1.7 GB in bf16 is written straight to safetensors shards (no download,
   no model instance), with a random r=64 LoRA adapter on every linear layer. Each merge path runs in a fresh
   process (imports included) that reports its own peak RSS (VmHWM); wall time is measured around it. Both
   write 500 MB shards. The merged folder is then verified both ways, each in a fresh process too.
2. On the tiny model after the debug QLoRA run: test-split loss of the trained 4-bit model and of the models merged
   into the NF4 round-trip and into the original weights.

Usage: python benchmarks/export_merge.py [--work DIR] [--report docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchlib import set_args
from safetensors.torch import save_file

DIMS = {"hidden": 2048, "intermediate": 5632, "layers": 16, "heads": 16, "kv_heads": 2, "vocab": 32000}
SHARD_BYTES = 500_000_000
RANK, ALPHA = 64, 128
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def linear_shapes() -> dict[str, tuple[int, int]]:
    h, i, kv = DIMS["hidden"], DIMS["intermediate"], DIMS["kv_heads"] * DIMS["hidden"] // DIMS["heads"]
    return {
        "q_proj": (h, h),
        "k_proj": (kv, h),
        "v_proj": (kv, h),
        "o_proj": (h, h),
        "gate_proj": (i, h),
        "up_proj": (i, h),
        "down_proj": (h, i),
    }


def base_tensors():
    """(name, shape) of every tensor of the model, in the order transformers writes them."""
    h = DIMS["hidden"]
    yield "model.embed_tokens.weight", (DIMS["vocab"], h)
    for layer in range(DIMS["layers"]):
        prefix = f"model.layers.{layer}"
        for name, shape in linear_shapes().items():
            group = "self_attn" if name in LINEAR[:4] else "mlp"
            yield f"{prefix}.{group}.{name}.weight", shape
            if name in ("q_proj", "k_proj", "v_proj"):
                yield f"{prefix}.{group}.{name}.bias", (shape[0],)
        yield f"{prefix}.input_layernorm.weight", (h,)
        yield f"{prefix}.post_attention_layernorm.weight", (h,)
    yield "model.norm.weight", (h,)
    yield "lm_head.weight", (DIMS["vocab"], h)


def build_base(folder: Path) -> int:
    from trainer.export.merge import TensorEntry, write_shards

    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    entries = [TensorEntry(name, torch.bfloat16, shape) for name, shape in base_tensors()]

    def random_tensors():
        for entry in entries:
            two_d = len(entry.shape) == 2
            tensor = torch.randn(entry.shape, generator=generator) * 0.02 if two_d else torch.ones(entry.shape)
            yield entry.key, [tensor.to(torch.bfloat16)]

    write_shards(folder, entries, random_tensors(), SHARD_BYTES)
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": DIMS["hidden"],
        "intermediate_size": DIMS["intermediate"],
        "num_hidden_layers": DIMS["layers"],
        "num_attention_heads": DIMS["heads"],
        "num_key_value_heads": DIMS["kv_heads"],
        "vocab_size": DIMS["vocab"],
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return sum(entry.nbytes for entry in entries)


def build_adapter(folder: Path, base: Path) -> None:
    folder.mkdir(parents=True)
    generator = torch.Generator().manual_seed(1)
    tensors = {}
    for layer in range(DIMS["layers"]):
        for name, (out_features, in_features) in linear_shapes().items():
            group = "self_attn" if name in LINEAR[:4] else "mlp"
            key = f"base_model.model.model.layers.{layer}.{group}.{name}"
            tensors[f"{key}.lora_A.weight"] = torch.randn((RANK, in_features), generator=generator) * 0.01
            tensors[f"{key}.lora_B.weight"] = torch.randn((out_features, RANK), generator=generator) * 0.01
    save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": RANK,
        "lora_alpha": ALPHA,
        "lora_dropout": 0.0,
        "target_modules": list(LINEAR),
        "bias": "none",
        "base_model_name_or_path": str(base),
    }
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))


def child(mode: str, base: Path, adapter: Path, out: Path) -> None:
    """One merge or verification path, run alone in its own process so its peak RSS is its own."""
    result = {}
    if mode == "verify-loaded":
        result["difference"] = loaded_verification(base, adapter, out)
    elif mode == "verify-streamed":
        from trainer.export.verify import reference_model, verify_export

        result["difference"] = verify_export(out, lambda: reference_model(base, adapter, None, set()), "bf16")
    elif mode == "peft":
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        merged.save_pretrained(out, max_shard_size=SHARD_BYTES)
    else:
        from trainer.export.merge import read_adapter_layout, stream_merge

        out.mkdir(parents=True)
        stream_merge(base, read_adapter_layout(adapter), out, torch.bfloat16, SHARD_BYTES)
    # VmHWM is this process's own peak after exec; wait4's ru_maxrss would include the parent's RSS at fork time.
    status = Path("/proc/self/status").read_text()
    print(json.dumps(result | {"peak_rss_bytes": int(status.split("VmHWM:")[1].split()[0]) * 1024}))


def loaded_verification(base: Path, adapter: Path, merged: Path) -> float:
    """The verification before streaming: PEFT on the whole base in fp32, then the whole merged model in fp32."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainer.export.verify import prompt_batch, prompt_logits, relative_difference

    batch, cpu = prompt_batch(merged), torch.device("cpu")
    reference = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    expected = prompt_logits(PeftModel.from_pretrained(reference, str(adapter)).eval(), batch, cpu)
    del reference
    got = prompt_logits(AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval(), batch, cpu)
    return relative_difference(got, expected)


def measure(mode: str, base: Path, adapter: Path, out: Path) -> dict[str, float]:
    start = time.perf_counter()
    command = [sys.executable, __file__, "--child", mode, str(base), str(adapter), str(out)]
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1]) | {"seconds": elapsed}


def max_difference(left: Path, right: Path) -> float:
    from safetensors import safe_open

    def tensors(folder):
        for shard in sorted(folder.glob("*.safetensors")):
            with safe_open(shard, framework="pt") as reader:
                for key in reader.keys():  # noqa: SIM118
                    yield key, reader.get_tensor(key)

    right_tensors = dict(tensors(right))
    return max(float((t.float() - right_tensors[k].float()).abs().max()) for k, t in tensors(left))


def merge_bases_on_tiny(work: Path) -> dict[str, float]:
    """Test-split loss of the QLoRA model as trained and merged into each base, after the debug pipeline."""
    from transformers import AutoModelForCausalLM

    from trainer.cli import main
    from trainer.config_file import load_config
    from trainer.dataset import load_processed
    from trainer.evaluation.evaluate import load_finetuned, teacher_forced
    from trainer.export.export import export_model

    root = Path(__file__).resolve().parent.parent
    sets = [
        f"model.cache_dir={work / 'cache'}",
        f"data.output_dir={work / 'processed'}",
        f"training.output_dir={work / 'ckpt'}",
        f"training.logging_dir={work / 'logs'}",
        f"evaluation.output_dir={work / 'eval'}",
        f"export.output_dir={work / 'models'}",
        f"data.examples_dir={root / 'data/raw/examples'}",
    ]
    config_path = root / "configs/training/debug.yaml"
    args = ["pipeline", "--config", str(config_path), *set_args(sets)]
    if main(args) != 0:
        raise SystemExit("debug pipeline failed")
    config = load_config(config_path, sets)
    rows = list(load_processed(config.data.output_dir)["test"])
    checkpoint = sorted(config.training.output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    model, tokenizer = load_finetuned(config, checkpoint)
    losses = {"QLoRA model as trained (4-bit base + adapter)": teacher_forced(model, tokenizer, rows)["all"]["loss"]}
    for base in ("nf4", "original"):
        variant = config.model_copy(
            update={
                "export": config.export.model_copy(update={"merge_base": base, "output_dir": work / f"merged-{base}"})
            }
        )
        folder = export_model(variant, checkpoint)
        merged = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        losses[f"merged into the {base} base weights (fp32)"] = teacher_forced(merged, tokenizer, rows)["all"]["loss"]
    return losses


def make_servable(merged: Path, base: Path, work: Path) -> None:
    """Give the base and the merged shards what an exported folder has besides weights: config and tokenizer (the
    tiny model's: its ids fit the vocabulary), so the verification can run on them."""
    import shutil

    from trainer.config import TinyModelSpec
    from trainer.tiny_model import build_tiny_model

    tiny = build_tiny_model(TinyModelSpec(), work / "tokenizer")
    for folder in (base, merged):
        for path in tiny.iterdir():
            if path.name.startswith(("tokenizer", "special_tokens", "chat_template")):
                shutil.copy2(path, folder / path.name)
    shutil.copy2(base / "config.json", merged / "config.json")


def main_bench(work: Path, report: Path) -> None:
    base, adapter, merged = work / "base", work / "adapter", work / "out-streamed"
    size = build_base(base)
    build_adapter(adapter, base)
    peft = measure("peft", base, adapter, work / "out-peft")
    ours = measure("streamed", base, adapter, merged)
    difference = max_difference(merged, work / "out-peft")
    make_servable(merged, base, work)
    checks = {mode: measure(mode, base, adapter, merged) for mode in ("verify-loaded", "verify-streamed")}
    old, new = checks["verify-loaded"], checks["verify-streamed"]
    losses = merge_bases_on_tiny(work / "tiny")
    gib = 2**30
    lines = [
        f"## Export merge — {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}",
        "",
        f"Random Qwen2-architecture model, {size / gib:.2f} GiB in bf16, LoRA r={RANK} on all 7 linear projections "
        f"of {DIMS['layers']} layers; both paths write {SHARD_BYTES // 10**6} MB shards. Command: `make bench`.",
        "",
        "| path | wall s | peak RSS GiB |",
        "| --- | ---: | ---: |",
        f"| PEFT `merge_and_unload` + `save_pretrained` | {peft['seconds']:.1f} | {peft['peak_rss_bytes'] / gib:.2f} |",
        f"| trainer streamed merge | {ours['seconds']:.1f} | {ours['peak_rss_bytes'] / gib:.2f} |",
        f"| **ratio (ours / PEFT)** | **{ours['seconds'] / peft['seconds']:.2f}×** | "
        f"**{ours['peak_rss_bytes'] / peft['peak_rss_bytes']:.2f}×** |",
        "",
        f"Largest difference between the two outputs' tensors: {difference:.3g}. Targets: RSS ≤ 0.33×, time ≤ 1.2×.",
        "",
        "Verification of the merged bf16 folder against base+adapter (3 chat prompts, CPU), each in its own process:",
        "",
        "| verification | wall s | peak RSS GiB | max logit difference / max logit |",
        "| --- | ---: | ---: | ---: |",
        f"| before: whole base + PEFT, then whole merged model, fp32 | {old['seconds']:.1f} | "
        f"{old['peak_rss_bytes'] / gib:.2f} | {old['difference']:.2e} |",
        f"| streamed: one module's weights at a time, fp32 | {new['seconds']:.1f} | "
        f"{new['peak_rss_bytes'] / gib:.2f} | {new['difference']:.2e} |",
        f"| **ratio (streamed / before)** | **{new['seconds'] / old['seconds']:.2f}×** | "
        f"**{new['peak_rss_bytes'] / old['peak_rss_bytes']:.2f}×** | |",
        "",
        "Merge base after QLoRA, tiny model after `make demo`'s run, test-split loss over assistant tokens:",
        "",
        "| model | loss |",
        "| --- | ---: |",
        *(f"| {name} | {loss:.4f} |" for name, loss in losses.items()),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    report.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "" if report.exists() else "# Benchmarks\n\nEach section is one `make bench` run; ratios are the claims.\n\n"
    )
    with report.open("a", encoding="utf-8") as out:
        out.write(header + text + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--report", type=Path, default=Path("docs/benchmarks.md"))
    options = parser.parse_args()
    if options.work:
        main_bench(options.work, options.report)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-export-") as scratch:
            main_bench(Path(scratch), options.report)
