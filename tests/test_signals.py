"""Stopping on a signal: every process of a run stops at the same step when any one is told to (a preemption
notice reaching one node first), saves it, and the restart resumes exactly; Ctrl-C saves and exits 130."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

from tests.helpers import DEBUG_CONFIG, set_args
from trainer.checkpoints.folder import checkpoint_dirs, problem
from trainer.errors import Interrupted, Preempted

STEPS = 6
# As tests/test_multinode.py: the same global batch on one and on two processes, no dropout, plain LoRA (no DDP
# with 4-bit): the adapters agree to float rounding.
COMMON = [
    f"training.max_steps={STEPS}", "training.save_steps=100", "training.logging_steps=1",
    "training.per_device_train_batch_size=2", "model.lora.dropout=0", "model.quantization=null",
]  # fmt: skip


def two_processes(overrides: list[str], env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """`trainer train` as ranks 0 and 1 of one run on this machine (gloo on CPU), as torchrun starts them."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = [sys.executable, "-m", "trainer.cli", "train", "--config", str(DEBUG_CONFIG), *set_args(overrides)]
    ranks = []
    for rank in range(2):
        rank_env = {**os.environ, **env, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"}
        rank_env |= {"LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        ranks.append(subprocess.Popen(args, env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [process.communicate(timeout=600) for process in ranks]
    finally:
        for process in ranks:
            process.kill()
    return [
        subprocess.CompletedProcess(p.args, p.returncode, *output) for p, output in zip(ranks, outputs, strict=True)
    ]


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_every_rank_at_the_same_step_and_the_restart_resumes_exactly(make_config, tmp_path):
    from trainer.synthesis.synthesize import synthesize

    config = make_config(*COMMON)
    synthesize(config)
    paths = [
        f"model.cache_dir={config.model.cache_dir}",
        f"data.output_dir={config.data.output_dir}",
        "data.sources=[]",
    ]
    run = [*paths, *COMMON, "training.gradient_accumulation_steps=1", f"training.output_dir={tmp_path / 'ckpt'}"]
    run.append(f"training.logging_dir={tmp_path / 'logs'}")

    stopped = two_processes(run, {"TRAINER_TERM_AT": "2:1"})  # rank 1 alone gets SIGTERM after step 2
    assert [r.returncode for r in stopped] == [Preempted.exit_code] * 2, stopped[0].stderr[-2000:]
    assert "stopped by a signal or notice to another process of the run at step 2" in stopped[0].stderr
    assert "stopped by SIGTERM at step 2" in stopped[1].stderr
    assert [p.name for p in checkpoint_dirs(tmp_path / "ckpt")] == ["checkpoint-2"]
    assert problem(tmp_path / "ckpt/checkpoint-2") is None
    assert (tmp_path / "ckpt/checkpoint-2/rng_state_1.pth").is_file()  # rank 1 saved the same step

    resumed = two_processes(run, {})
    assert [r.returncode for r in resumed] == [0, 0], resumed[0].stderr[-2000:]
    assert "resuming from" in resumed[0].stdout and "checkpoint-2" in resumed[0].stdout

    uninterrupted = [*paths, *COMMON, f"training.output_dir={tmp_path / 'one'}"]
    assert [r.returncode for r in two_processes([*uninterrupted, f"training.logging_dir={tmp_path / 'l1'}"], {})] == [
        0,
        0,
    ]
    two = load_file(tmp_path / f"ckpt/checkpoint-{STEPS}/adapter_model.safetensors")
    one = load_file(tmp_path / f"one/checkpoint-{STEPS}/adapter_model.safetensors")
    assert two.keys() == one.keys()
    assert max((two[k] - one[k]).abs().max().item() for k in one) <= 1e-6
    assert max(one[k].abs().max().item() for k in one if "lora_B" in k) > 1e-3  # it trained


@pytest.mark.slow
def test_ctrl_c_saves_the_step_and_exits_130(make_config):
    from tests.helpers import training_in_background
    from trainer.synthesis.synthesize import synthesize

    config = make_config("training.max_steps=100000", "training.save_steps=100000")
    synthesize(config)
    with training_in_background(config, "training.max_steps=100000") as process:
        log = config.training.logging_dir / "metrics.jsonl"
        deadline = time.monotonic() + 300
        while not (log.is_file() and log.read_text().count("\n") >= 2) and time.monotonic() < deadline:
            time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        err = process.communicate(timeout=300)[1]
    assert process.returncode == Interrupted.exit_code, err[-2000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted: stopped by Ctrl-C at step ") and line.endswith(
        "run the same command to resume"
    )
    (saved,) = checkpoint_dirs(config.training.output_dir)
    assert problem(saved) is None and f"checkpoint {saved} saved" in line
