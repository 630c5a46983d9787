"""Faults around a training run: a second run on the same folder, a full disk, a folder that turns read-only.

The disk is a real small tmpfs and the read-only folder a real read-only bind mount, so the errors come from the
kernel, as they would on a cloud VM (the tests mount as root; elsewhere they are skipped with the reason).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from transformers import TrainerCallback

from tests.helpers import train_process, training_in_background
from trainer.checkpoints.folder import MANIFEST, problem
from trainer.errors import TrainerError
from trainer.synthesis.synthesize import synthesize
from trainer.training.run_lock import run_lock
from trainer.training.train import train

pytestmark = pytest.mark.slow  # every test trains, most in fresh processes


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs at tmp_path/disk (remount it with another size to fill it)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        mount("-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk))
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {exc}")
    yield disk
    while subprocess.run(["umount", str(disk)], capture_output=True).returncode == 0:
        pass  # the tmpfs and any bind mount stacked on it


def test_a_second_run_on_the_same_folder_is_refused_and_a_killed_runs_lock_is_free(make_config):
    config = make_config("training.save_steps=5", "training.resume=never")
    synthesize(config)
    with training_in_background(config, "training.max_steps=100000", "training.save_total_limit=null") as first:
        checkpoint = config.training.output_dir / "checkpoint-5"
        deadline = time.time() + 120
        while not (checkpoint / MANIFEST).is_file() and time.time() < deadline:
            time.sleep(0.1)
        assert (checkpoint / MANIFEST).is_file(), first.stderr.read() if first.poll() is not None else "too slow"

        # resume=never would delete the first run's checkpoints: the lock stops it before that.
        second = train_process(config, "training.max_steps=10", "training.resume=never")
        assert second.returncode == 2
        assert (
            f"error: {config.training.output_dir} is in use by another `trainer train` (pid {first.pid} "
            in second.stderr
        )
        assert problem(checkpoint) is None and first.poll() is None

        first.send_signal(signal.SIGKILL)  # a reclaimed spot VM: no clean-up runs, the kernel drops the lock
        first.wait(timeout=30)
    with run_lock(config.training.output_dir):
        assert (config.training.output_dir / ".trainer.lock").read_text().startswith(f"pid {os.getpid()} ")


def test_a_full_disk_at_a_save_keeps_the_previous_checkpoint_resumable(make_config, small_disk):
    config = make_config("training.save_steps=2", f"training.output_dir={small_disk / 'checkpoints'}")
    synthesize(config)
    assert train_process(config, "training.max_steps=2").returncode == 0
    complete = config.training.output_dir / "checkpoint-2"
    size = sum(p.stat().st_size for p in complete.rglob("*") if p.is_file())
    used = shutil.disk_usage(small_disk).used
    mount("-o", f"remount,size={used + size // 2}", str(small_disk))  # room for half of the next checkpoint

    full = train_process(config, "training.max_steps=4")
    assert full.returncode == 2, full.stderr[-2000:]
    error = full.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: cannot save {config.training.output_dir / 'checkpoint-4'}: ")
    assert error.endswith(f"{complete} is complete and a rerun resumes from it once there is room to write")
    assert "Traceback" not in full.stderr
    assert not (config.training.output_dir / "checkpoint-4").exists()  # the torn one is removed, freeing its space
    assert problem(complete) is None

    mount("-o", "remount,size=64m", str(small_disk))
    rerun = train_process(config, "training.max_steps=4")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming from {complete}" in rerun.stdout
    assert problem(config.training.output_dir / "checkpoint-4") is None


class ReadOnlyBeforeSave(TrainerCallback):
    """Turns the output folder read-only just before the save at `step` (a bind mount over it, remounted ro)."""

    def __init__(self, folder: Path, step: int):
        self.folder, self.step = folder, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            mount("--bind", str(self.folder), str(self.folder))
            mount("-o", "remount,bind,ro", str(self.folder))


def test_a_folder_turning_read_only_at_a_save_is_a_clear_error(make_config, small_disk):
    folder = small_disk / "checkpoints"
    config = make_config("training.max_steps=4", "training.save_steps=2", f"training.output_dir={folder}")
    synthesize(config)
    with pytest.raises(TrainerError) as error:
        train(config, callbacks=(ReadOnlyBeforeSave(folder, step=4),))
    assert str(error.value).startswith(f"cannot save {folder / 'checkpoint-4'}: ")
    assert "Read-only file system" in str(error.value)
    assert problem(folder / "checkpoint-2") is None

    at_start = train_process(config, "training.max_steps=6")  # still read-only: refused before any work
    assert at_start.returncode == 2
    assert at_start.stderr.strip().splitlines()[-1] == (
        f"error: {folder}: cannot write the training output folder: Read-only file system"
    )
    subprocess.run(["umount", str(folder)], check=True)
    rerun = train_process(config, "training.max_steps=4")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resuming from {folder / 'checkpoint-2'}" in rerun.stdout
