"""Progress a user can read: plain periodic lines off a terminal, and Ctrl-C during evaluate or export leaves
nothing half-written and exits 130."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import DEBUG_CONFIG, background, set_args
from trainer import cli, progress
from trainer.export import export as export_stage


def test_off_a_terminal_progress_is_plain_periodic_lines(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    assert list(progress.track([1, 2, 3], "Scoring test split")) == [1, 2, 3]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"Scoring test split: {n}/3" for n in (1, 2, 3)]
    assert lines[-1].endswith("about 0 s left")
    assert progress.progress_line("Indexing x", 5, None, 12.4) == "Indexing x: 5, 12 s so far"
    assert progress.progress_line("Indexing x", 1, 4, 10.0) == "Indexing x: 1/4, 10 s so far, about 30 s left"


def as_from_a_terminal() -> None:
    """Ctrl-C as a foreground command at a terminal gets it: a runner that started pytest in the background (`cmd &`
    in a script) passes SIGINT ignored to its children, and a command started so rightly leaves it ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def ctrl_c_raises():
    """This process's Ctrl-C as at a terminal (see `as_from_a_terminal`) for the test, as it was afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def interrupted(args: list[str], ready, pause_at: str = "") -> subprocess.CompletedProcess:
    """`trainer args` sent Ctrl-C (SIGINT) once `ready()` is true; `pause_at`: a failpoint (trainer/failpoints.py)
    that holds the command mid-write, so the Ctrl-C cannot come after the work is done."""
    command = [sys.executable, "-m", "trainer.cli", *args]
    env = {**os.environ, "TRAINER_PAUSE_AT": pause_at}
    popen = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    with background(command, preexec_fn=as_from_a_terminal, **popen) as process:
        deadline = time.monotonic() + 300
        while not ready() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.poll() is None, f"finished before its Ctrl-C: {process.stderr.read()[-2000:]}"
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
    done = interrupted(export, lambda: any(models.glob(".m-*/.model-*.partial")), pause_at="shard")
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stderr.splitlines()[-1] == "error: interrupted"
    assert list(models.iterdir()) == []  # no published folder, no staging folder left behind


SAFETENSORS_INTERRUPTED = "could not determine the shape of object type 'torch.storage.UntypedStorage'"


def test_ctrl_c_that_a_library_turns_into_another_exception_is_still_a_stop(monkeypatch, capsys, ctrl_c_raises):
    """safetensors' get_slice, interrupted mid-read, raises ValueError in place of the KeyboardInterrupt: the user
    still gets `error: interrupted` and 130, not a traceback and 1. The same ValueError without Ctrl-C is a bug."""

    def interrupted_read(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise ValueError(SAFETENSORS_INTERRUPTED) from None

    monkeypatch.setattr(export_stage, "export_model", interrupted_read)
    assert cli.main(["export", "--config", str(DEBUG_CONFIG)]) == 130
    assert capsys.readouterr().err == "error: interrupted\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # main leaves Ctrl-C as it found it

    def failed_read(*args, **kwargs):
        raise ValueError(SAFETENSORS_INTERRUPTED)

    monkeypatch.setattr(export_stage, "export_model", failed_read)
    assert cli.main(["export", "--config", str(DEBUG_CONFIG)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith(f"ValueError: {SAFETENSORS_INTERRUPTED}\n")
