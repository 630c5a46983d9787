"""Progress a user can read: plain periodic lines off a terminal, and Ctrl-C during evaluate or export leaves
nothing half-written and exits 130."""

import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import DEBUG_CONFIG, background, set_args
from trainer import progress


def test_off_a_terminal_progress_is_plain_periodic_lines(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    assert list(progress.track([1, 2, 3], "Scoring test split")) == [1, 2, 3]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"Scoring test split: {n}/3" for n in (1, 2, 3)]
    assert lines[-1].endswith("about 0 s left")
    assert progress.progress_line("Indexing x", 5, None, 12.4) == "Indexing x: 5, 12 s so far"
    assert progress.progress_line("Indexing x", 1, 4, 10.0) == "Indexing x: 1/4, 10 s so far, about 30 s left"


def interrupted(args: list[str], ready) -> subprocess.CompletedProcess:
    """`trainer args` sent Ctrl-C (SIGINT) once `ready()` is true."""
    command = [sys.executable, "-m", "trainer.cli", *args]
    with background(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + 300
        while not ready() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # the tiny model's export can finish within 0.2 s of its staging folder appearing
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


@pytest.mark.slow
def test_ctrl_c_during_evaluate_and_export_writes_nothing_and_exits_130(pipeline_run, tmp_path):
    safe = [f"model.cache_dir={pipeline_run.model.cache_dir}", f"data.output_dir={pipeline_run.data.output_dir}"]
    safe.append(f"training.output_dir={pipeline_run.training.output_dir}")
    report = tmp_path / "eval"
    started = time.monotonic()
    evaluate = ["evaluate", "--config", str(DEBUG_CONFIG), *set_args(safe), "--out", str(report), "--baseline"]
    done = interrupted([*evaluate, "--max-new-tokens", "4000"], lambda: time.monotonic() - started > 15)
    assert (done.returncode, done.stderr.splitlines()[-1]) == (130, "error: interrupted"), done.stderr[-2000:]
    assert not report.exists()  # the report is written whole at the end, or not at all

    models = tmp_path / "models"
    export = ["export", "--config", str(DEBUG_CONFIG), *set_args(safe), "--out", str(models / "m")]
    done = interrupted(export, lambda: any(models.glob(".m-*")))  # the staging folder exists: writing has begun
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stderr.splitlines()[-1] == "error: interrupted"
    assert list(models.iterdir()) == []  # no published folder, no staging folder left behind
