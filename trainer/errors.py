"""The one exception type for problems a user can fix (bad input, bad config, missing files).

The CLI prints it as a single line and exits with a non-zero code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class TrainerError(Exception):
    """A problem with the user's input, config or environment, worded so the user can act on it."""


class Preempted(Exception):
    """Training stopped on SIGTERM or a preemption notice after a final checkpoint, that of `step`; the exit code
    asks a supervisor to restart it."""

    exit_code = 75  # EX_TEMPFAIL: a temporary failure, try again
    label = "preempted"

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class Interrupted(Preempted):
    """Stopped by Ctrl-C (SIGINT) after a final checkpoint: the user's stop, so `&&` chains stop too."""

    exit_code = 130  # 128 + SIGINT, as a shell reports it
    label = "interrupted"


def problems_error(headline: str, problems: list[str]) -> TrainerError:
    """One line for one problem; a headline and every problem on its own line for several."""
    if len(problems) == 1:
        return TrainerError(f"{headline}: {problems[0]}")
    return TrainerError(f"{headline} ({len(problems)} problems):\n  " + "\n  ".join(problems))


def first_line(exc: BaseException) -> str:
    """An exception's first message line for a one-line error (its type's name when the message is empty)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` naming the closest of `choices` to a misspelt `name`, or '' when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
