"""Progress: a bar with its ETA on a terminal; in a log file or a pipe, where a bar would only leave carriage returns
and a blank line, a plain line now and then instead (`<what>: 120/480, 30 s so far, about 90 s left`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

from rich.progress import track as rich_track

Item = TypeVar("Item")
LOG_EVERY_S = 30.0  # a log line at most this often, so a long stage shows it is alive without flooding the log


def on_terminal() -> bool:
    return sys.stdout.isatty()


def track(items: Iterable[Item], description: str, total: int | None = None) -> Iterator[Item]:
    """`items`, with a transient progress bar named `description` on a terminal, periodic lines elsewhere; `total`
    for an iterator that cannot tell its length (results as they complete)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    if on_terminal():
        yield from rich_track(items, description=description, transient=True, total=total)
        return
    start = last = time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if now - last >= LOG_EVERY_S:
            last = now
            print(progress_line(description, done, total, now - start), flush=True)


def progress_line(description: str, done: int, total: int | None, elapsed: float) -> str:
    """One plain progress line, with the time left at the pace so far when the total is known."""
    if total is None:
        return f"{description}: {done}, {elapsed:.0f} s so far"
    left = elapsed / done * (total - done)
    return f"{description}: {done}/{total}, {elapsed:.0f} s so far, about {left:.0f} s left"
