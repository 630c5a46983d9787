"""Benchmark the preemption machinery on the tiny model, against a local S3-compatible server (moto).

1. Training step time with every checkpoint mirrored to S3 in the background versus local checkpoints only
   (same steps, same save interval; runs alternate, the median of each counts).
2. Seconds from `trainer train` process start to its first resumed optimizer step, resuming from S3 onto an
   empty machine (nothing local), as a recovered spot job does.

Usage: python benchmarks/preemption.py [--report docs/benchmarks.md]
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import append_section, report_path, set_args

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs/training/debug.yaml"
STEPS, REPEATS = 100, 3
INTERVALS = (5, 50)  # a checkpoint every 0.7 s (stress), and the debug config's interval


def start_s3() -> subprocess.Popen:
    """moto's S3 server in its own process, as a real store is elsewhere (in-process it would take our GIL)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_DEFAULT_REGION="us-east-1",
    )
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench")
    return server


def overrides(work: Path, name: str, uri: str | None, steps: int, save_every: int = INTERVALS[0]) -> list[str]:
    return [
        f"model.cache_dir={work / 'cache'}",
        f"data.output_dir={work / 'data'}",
        f"training.output_dir={work / name}",
        f"training.logging_dir={work / (name + '-logs')}",
        f"training.max_steps={steps}",
        f"training.save_steps={save_every}",
        "training.logging_steps=1",
        f"training.checkpoint_uri={uri or 'null'}",
        "training.resume=auto",
    ]


def step_seconds(work: Path, name: str, uri: str | None, save_every: int) -> float:
    """Seconds per optimizer step of one run, from the trainer's own runtime."""
    from trainer.config_file import load_config
    from trainer.training.train import train

    shutil.rmtree(work / name, ignore_errors=True)
    result = train(load_config(CONFIG, overrides(work, name, uri, STEPS, save_every)))
    return result.metrics["train_runtime"] / STEPS


def seconds_to_first_resumed_step(work: Path, uri: str) -> tuple[float, int]:
    """Train half the steps, wipe the machine, restart: time from the restart to its first logged step."""
    from trainer.config_file import load_config
    from trainer.training.train import train

    train(load_config(CONFIG, overrides(work, "resume", f"{uri}/resume", STEPS // 2, INTERVALS[-1] // 2)))
    shutil.rmtree(work / "resume")
    shutil.rmtree(work / "resume-logs")
    args = [sys.executable, "-m", "trainer.cli", "train", "--config", str(CONFIG)]
    args += set_args(overrides(work, "resume", f"{uri}/resume", STEPS, INTERVALS[-1] // 2))
    start = time.time()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = work / "resume-logs" / "metrics.jsonl"
    first = None
    while first is None and process.poll() is None:
        if log.is_file():
            steps = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
            resumed = [r for r in steps if r["step"] > STEPS // 2 and "loss" in r]
            first = resumed[0] if resumed else None
        time.sleep(0.02)
    process.wait()
    if first is None:
        raise SystemExit("the resumed run logged no step")
    return first["time"] - start, first["step"]


def main(report: Path) -> None:
    from trainer.cli import main as cli

    server, uri = start_s3(), "s3://bench"
    with tempfile.TemporaryDirectory(prefix="bench-preemption-") as scratch:
        work = Path(scratch)
        if cli(["synthesize", "--config", str(CONFIG), *set_args([f"data.output_dir={work / 'data'}"])]) != 0:
            raise SystemExit("synthesize failed")
        rows = []
        for every in INTERVALS:
            local, mirrored = [], []
            for repeat in range(REPEATS):
                local.append(step_seconds(work, "local", None, every))
                mirrored.append(step_seconds(work, "mirrored", f"{uri}/mirrored-{every}-{repeat}", every))
            local_s, mirrored_s = statistics.median(local), statistics.median(mirrored)
            rows.append(f"| every {every} steps | {local_s:.4f} | {mirrored_s:.4f} | **{mirrored_s / local_s:.3f}×** |")
        to_first_step, step = seconds_to_first_resumed_step(work, uri)
    server.terminate()
    lines = [
        f"## Preemption — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores",
        "",
        f"Tiny model (debug config, QLoRA on CPU, ~0.14 s a step), {STEPS} steps; S3 is a moto server in another "
        f"process on the same {os.cpu_count()} cores, so its work is charged to this machine too. Median of {REPEATS} "
        "alternating runs. Command: `make bench`. Target: ≤ 1.05×.",
        "",
        "| checkpoint interval | s / step, local only | s / step, + background upload to S3 | ratio |",
        "| --- | ---: | ---: | ---: |",
        *rows,
        "",
        f"Process start to the first resumed optimizer step (step {step}), resuming from S3 onto an empty machine: "
        f"{to_first_step:.1f} s (imports, tiny model build from cache, data, download and verification included).",
        "",
    ]
    append_section(report, lines)


if __name__ == "__main__":
    main(report_path(__doc__))
