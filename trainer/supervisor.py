"""A command with `--run-uri` runs in a child process under a small parent that outlives it.

A stage killed outright (the kernel's OOM killer, SIGKILL) cannot write run.json itself, and the run would read
"running" forever. The parent waits, and when the child dies by a signal it marks the run failed with the stage
that was running, then exits 128 + the signal's number as a shell would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from trainer.artifacts import read_run, update_run
from trainer.errors import TrainerError

CHILD = "TRAINER_SUPERVISED_CHILD"  # set in the child, so it runs the command instead of supervising again


def run_uri_of(argv: list[str]) -> str | None:
    """The `--run-uri` value in `argv`, if this process is to supervise one; None otherwise (or in the child)."""
    if os.environ.get(CHILD) == "1":
        return None
    for index, arg in enumerate(argv):
        if arg == "--run-uri" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--run-uri="):
            return arg.partition("=")[2]
    return None


def supervise(argv: list[str], run_uri: str) -> int:
    """Run `trainer argv` in a child process; returns its exit code, marking the run failed if a signal killed it."""
    child = subprocess.Popen([sys.executable, "-m", "trainer.cli", *argv], env={**os.environ, CHILD: "1"})
    # SIGTERM (a spot preemption) goes on to the child, whose handler saves and exits 75. Ctrl-C reaches the whole
    # foreground process group, the child included, so the parent only has to outlive it.
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum)),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
    }
    try:
        code = child.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if code >= 0:
        return code
    name = signal.Signals(-code).name
    try:
        record = read_run(run_uri) or {}
        stage = record.get("stage", "the command")
        if record.get("status") == "running":
            why = f"{stage} was killed by {name}" + (" (out of memory, most likely)" if name == "SIGKILL" else "")
            update_run(run_uri, status="failed", stage=stage, error=why)
    except TrainerError as exc:
        print(f"warning: cannot mark {run_uri} failed: {exc}", file=sys.stderr)
        stage = "the command"
    print(f"error: {stage} was killed by {name}; {run_uri}/run.json says failed", file=sys.stderr)
    return 128 - code
