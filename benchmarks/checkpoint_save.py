"""Benchmark what a preemption notice has to fit: saving, sealing and uploading a checkpoint of the production size.

Qwen 2.5 7B with LoRA r=64 (configs/model/qwen-7b-lora.yaml) on every linear layer, trained in fp32 master weights
with AdamW: the adapter (safetensors) and the optimizer's two moments (torch.save), as transformers writes them,
then CheckpointStore.publish (every file hashed into the manifest) and its upload to S3 (boto3's managed transfer,
the manifest last), awaited as a stop on a preemption notice awaits it. S3 is a moto server in another process on
this machine: the upload figure is this machine's loopback and CPUs, not a cloud network.

Usage: python benchmarks/checkpoint_save.py [--report docs/benchmarks.md]
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
import yaml
from benchlib import append_section, report_path
from preemption import start_s3
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
# Qwen2.5-7B-Instruct's config.json: hidden 3584, MLP 18944, 4 key/value heads of 128, 28 layers.
HIDDEN, MLP, KV, LAYERS = 3584, 18944, 4 * 128, 28
# (in, out) of each linear projection LoRA wraps ("all-linear").
PROJECTIONS = {"q": (HIDDEN, HIDDEN), "k": (HIDDEN, KV), "v": (HIDDEN, KV), "o": (HIDDEN, HIDDEN),
               "gate": (HIDDEN, MLP), "up": (HIDDEN, MLP), "down": (MLP, HIDDEN)}  # fmt: skip


def adapter_parameters(rank: int) -> int:
    """LoRA A (r × in) and B (out × r) of every projection of every layer."""
    return LAYERS * sum(rank * (fan_in + fan_out) for fan_in, fan_out in PROJECTIONS.values())


def write_checkpoint(folder: Path, parameters: int) -> None:
    """The two large files of a checkpoint, written as transformers writes them (random values: no compression)."""
    folder.mkdir(parents=True)
    weights = torch.randn(parameters)
    save_file({"adapter": weights}, folder / "adapter_model.safetensors")
    moments = {"exp_avg": torch.randn(parameters), "exp_avg_sq": torch.rand(parameters)}
    torch.save({"state": {0: moments}, "param_groups": []}, folder / "optimizer.pt")


def patient_client():
    """An S3 client like ObjectStore's (standard retries) that waits up to 10 minutes for a response."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client("s3", config=Config(retries={"mode": "standard"}, read_timeout=600))


def save_and_upload(parameters: int) -> tuple[float, float, float, int]:
    """Seconds to write, seal and upload a checkpoint of `parameters` adapter parameters, and its size in bytes."""
    from trainer.checkpoints.store import CheckpointStore

    with tempfile.TemporaryDirectory(prefix="bench-checkpoint-", dir=os.environ.get("BENCH_DIR")) as scratch:
        folder = Path(scratch) / "checkpoint-1"
        start = time.monotonic()
        write_checkpoint(folder, parameters)
        written = time.monotonic()
        store = CheckpointStore(Path(scratch), "s3://bench/checkpoints")
        # moto assembles a multipart object in Python: completing 1.3 GB takes it longer than botocore's 60 s read
        # timeout, which a real store does not. The transfer itself is the trainer's.
        store.remote.client = patient_client()
        store.publish(folder)
        sealed = time.monotonic()
        if not store.wait():
            raise SystemExit("the upload failed")
        uploaded = time.monotonic()
        size = sum(p.stat().st_size for p in folder.iterdir())
    return written - start, sealed - written, uploaded - sealed, size


def main(report: Path) -> None:
    rank = yaml.safe_load((ROOT / "configs/model/qwen-7b-lora.yaml").read_text())["lora"]["r"]
    parameters = adapter_parameters(rank)
    server = start_s3()
    try:
        write_s, seal_s, upload_s, size = save_and_upload(parameters)
    finally:
        server.terminate()
    load = os.getloadavg()[0]
    lines = [
        f"## Checkpoint save and upload, production size — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores",
        "",
        f"Qwen 2.5 7B, LoRA r={rank} on every linear layer: {parameters:,} adapter parameters in fp32 plus AdamW's "
        f"two moments, {size / 1e9:.2f} GB in `adapter_model.safetensors` and `optimizer.pt`. S3 is a moto server "
        f"in another process on the same cores (load average {load:.1f} when it ended). Command: "
        "`python benchmarks/checkpoint_save.py` (in `make bench`).",
        "",
        "| phase | s | MB/s |",
        "| --- | ---: | ---: |",
        f"| write (safetensors + torch.save) | {write_s:.1f} | {size / 1e6 / write_s:.0f} |",
        f"| seal (sha256 of every file, manifest) | {seal_s:.1f} | {size / 1e6 / seal_s:.0f} |",
        f"| upload to S3 (multipart, SHA-256 checked, manifest last) | {upload_s:.1f} | {size / 1e6 / upload_s:.0f} |",
        f"| **total** | **{write_s + seal_s + upload_s:.1f}** | |",
        "",
    ]
    append_section(report, lines)


if __name__ == "__main__":
    main(report_path(__doc__))
