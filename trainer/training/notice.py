"""The preemption notice: how a cloud's warning before a spot reclaim reaches the trainer.

SkyPilot runs the spot tasks' `preemption` hook (sky/*.yaml) when the cloud announces the reclaim. The hook writes
`PREEMPTION_NOTICE` in the task's working folder (the trainer's current directory); every training process there
looks for it after each optimizer step and, finding it, stops exactly as on SIGTERM: every rank at the same step,
one sealed checkpoint, mirrored, exit 75.

While a process trains it holds a shared flock on `PREEMPTION_NOTICE.lock` in the same folder. The hook writes the
notice only if someone holds it (otherwise nothing is training there: after training ended, or before it began)
and then waits for an exclusive lock, which the kernel grants once every training process there has stopped and
recorded its stop, however it ended. A leftover notice was written while an earlier process trained: a process
removes it before it starts listening.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NOTICE_FILE = "PREEMPTION_NOTICE"
LISTENERS_FILE = f"{NOTICE_FILE}.lock"  # shared-locked by every process training in the folder


def notice_path(folder: Path | None = None) -> Path:
    """Where the notice for a process working in `folder` (default: the current directory) is written."""
    return (folder or Path.cwd()).absolute() / NOTICE_FILE


@contextmanager
def listening(folder: Path | None = None) -> Iterator[Path]:
    """Hold the listeners' lock in `folder` (default: the current directory) while the block trains; yields the
    notice's path. A notice already there is an earlier process's and is removed first. In a folder this process
    cannot write, it trains without listening, with a warning: no hook can write a notice there either."""
    notice = notice_path(folder)
    try:
        notice.unlink(missing_ok=True)
        handle = (notice.parent / LISTENERS_FILE).open("a")
    except OSError as exc:
        print(f"warning: not listening for a preemption notice in {notice.parent}: {exc.strerror}")
        yield notice
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_SH)  # the hook waits for LOCK_EX: for every holder to close the file
        yield notice
