"""How a command ends: the exit code, and the one line a user reads, for every way it can stop.

2: a problem the user can fix (`error:` line naming the file, key or option); 130: Ctrl-C; 75: a preemption with a
checkpoint saved; 1: a bug, whose traceback (credentials masked) is for a bug report.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator

import typer

from trainer.errors import Interrupted, Preempted, TrainerError
from trainer.redact import redact
from trainer.usage import usage_error_line

# A full disk, a read-only folder, a quota, no permission: the user's to fix, so an error line, not a traceback.
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
INTERRUPTED = Interrupted.exit_code  # 130: `&&` chains stop


@contextlib.contextmanager
def noticing_ctrl_c() -> Iterator[Callable[[], bool]]:
    """Within it Ctrl-C raises KeyboardInterrupt as always, and is also remembered; yields "was Ctrl-C pressed?".

    Native code can catch the KeyboardInterrupt and raise something else in its place: safetensors' `get_slice`,
    interrupted in the middle, raises `ValueError: could not determine the shape of object type
    'torch.storage.UntypedStorage'`. Remembering the signal keeps the user's stop a stop (exit 130), not a bug.
    Where SIGINT is ignored (a background job) or this is not the main thread, nothing changes.
    """
    on_main_thread = threading.current_thread() is threading.main_thread()
    if not on_main_thread or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield lambda: False
        return
    received: list[int] = []

    def on_sigint(signum, frame) -> None:
        received.append(signum)
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def exit_code_of(exc: BaseException, ctrl_c: bool) -> int:
    """Say on stderr how the command stopped on `exc` and return its exit code; `ctrl_c`: the user pressed it."""
    if isinstance(exc, Preempted):  # and Interrupted: training's own stop on a signal, with a checkpoint saved
        return _say(f"{exc.label}: {exc}", exc.exit_code)
    if ctrl_c or isinstance(exc, KeyboardInterrupt | typer.Abort):
        return interrupted()
    if isinstance(exc, typer.TyperException):  # a usage slip: click's own exceptions are these in typer ≥ 0.29
        return _say(usage_error_line(exc), exc.exit_code)
    if isinstance(exc, TrainerError):
        return _say(f"error: {exc}", 2)
    if isinstance(exc, OSError) and exc.errno in UNWRITABLE:
        return _say(f"error: cannot write {exc.filename or 'a file'}: {exc.strerror}", 2)
    print(redact("".join(traceback.format_exception(exc))), file=sys.stderr, end="")
    return 1


def interrupted() -> int:
    return _say("error: interrupted", INTERRUPTED)


def _say(line: str, code: int) -> int:
    print(redact(line), file=sys.stderr)
    return code
