"""What the teacher (synthesis) and the endpoints (evaluation) share about OpenAI-compatible chat-completions
servers, reached through the `openai` client: many requests at a time, and one line for a failed request."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TypeVar

from trainer.progress import track

Asked = TypeVar("Asked")
Answer = TypeVar("Answer")
MAX_SAID_CHARS = 300  # a server's error page can be long; the line keeps its start


def error_text(exc: Exception) -> str:
    """`HTTP 500: the server's own message` (its error body's, whitespace collapsed, not the client's `Error code:
    500 - {...}` wrapping), or the error's text where no status came back (connection refused, a timeout)."""
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    said = body.get("message") if isinstance(body, dict) else None
    message = " ".join(str(said or getattr(exc, "message", "") or exc).split())[:MAX_SAID_CHARS]
    return f"HTTP {status}: {message}" if status else message or type(exc).__name__


def ask_all(ask: Callable[[Asked], Answer], items: Sequence[Asked], concurrency: int, description: str) -> list[Answer]:
    """`ask(item)` for every item, `concurrency` at a time, the answers in the items' order. The progress bar counts
    answers as they arrive, so one slow request holds none of the others' back. The first exception (a failed
    request, Ctrl-C) cancels the requests not yet sent and is raised at once, not after the requests in flight (their
    threads end with them; the interpreter joins them at exit)."""
    if not items:
        return []
    answers: dict[int, Answer] = {}
    pool = ThreadPoolExecutor(max_workers=concurrency)
    try:
        futures = {pool.submit(ask, item): at for at, item in enumerate(items)}
        for future in track(as_completed(futures), description=description, total=len(futures)):
            answers[futures[future]] = future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # after success the workers are idle; they end on their own
    return [answers[at] for at in range(len(items))]
