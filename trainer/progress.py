"""Progress bars on a terminal only: rich draws a bar there; in a log file or a pipe it would only leave a blank
line at the end (and the line stdout began with), so there it is off."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import track as rich_track

Item = TypeVar("Item")


def on_terminal() -> bool:
    return sys.stdout.isatty()


def track(items: Iterable[Item], description: str) -> Iterator[Item]:
    """`items`, with a transient progress bar named `description` on a terminal."""
    yield from rich_track(items, description=description, transient=True, disable=not on_terminal())
