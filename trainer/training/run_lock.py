"""One `trainer train` per output folder: a second one is refused instead of interleaving checkpoints.

The lock is an flock on `<output_dir>/.trainer.lock`. The kernel releases it when its process ends however it ends
(SIGKILL, a spot reclaim), so a stale lock never blocks a restarted job; the file only says who held it last.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trainer.errors import TrainerError

LOCK_FILE = ".trainer.lock"


@contextmanager
def run_lock(output_dir: Path) -> Iterator[None]:
    """Hold `output_dir` for this process, or raise TrainerError naming the process that holds it."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        handle = (output_dir / LOCK_FILE).open("a+", encoding="utf-8")
    except OSError as exc:
        raise TrainerError(f"{output_dir}: cannot write the training output folder: {exc.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise TrainerError(
            f"{output_dir} is in use by another `trainer train` ({holder}); wait for it to finish, "
            "or give this run another training.output_dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    handle.flush()
    try:
        yield
    finally:
        handle.close()  # closing the file releases the lock
