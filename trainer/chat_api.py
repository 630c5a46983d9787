"""What the teacher (synthesis) and the endpoints (evaluation) share about OpenAI-compatible chat-completions
servers, reached through the `openai` client: one line for a failed request."""

from __future__ import annotations

MAX_SAID_CHARS = 300  # a server's error page can be long; the line keeps its start


def error_text(exc: Exception) -> str:
    """`HTTP 500: the server's own message` (its error body's, whitespace collapsed, not the client's `Error code:
    500 - {...}` wrapping), or the error's text where no status came back (connection refused, a timeout)."""
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    said = body.get("message") if isinstance(body, dict) else None
    message = " ".join(str(said or getattr(exc, "message", "") or exc).split())[:MAX_SAID_CHARS]
    return f"HTTP {status}: {message}" if status else message or type(exc).__name__
