"""Chat-completion requests to the teacher through the `openai` client: an on-disk cache keyed by the request's
content, a hard budget of real HTTP requests, retries with backoff, and JSON mode where the server offers it.

The client's own retries are off (`max_retries=0`): every HTTP attempt is made here, so each one is counted against
`data.teacher.max_requests` — a retry costs what a first ask costs on a hosted API.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from trainer.chat_api import ask_all, error_text
from trainer.data_config import TeacherSettings
from trainer.errors import TrainerError
from trainer.redact import api_key

CACHE_FOLDER = "teacher"  # under data.cache_dir: one JSON file per reply, named by the request's content hash
JSON_MODE = {"type": "json_object"}
MAX_RETRY_AFTER_S = 60.0
FATAL = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)
RETRIED = (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError, openai.APIConnectionError)
REFUSED = (openai.BadRequestError, openai.UnprocessableEntityError)
Chat = list[dict[str, Any]]


@dataclass
class Reply:
    content: str | None  # None: nothing came back (see `error`)
    finish_reason: str = ""
    error: str = ""  # why there is no content: the budget was spent, or the request failed after its retries
    failed: bool = False  # asked, and no reply came (not: left unasked by the budget)


@dataclass
class Usage:
    """What the teacher cost this run: real HTTP requests (retries included) and tokens; replies read from the cache
    cost nothing and are counted apart."""

    requests: int = 0
    cached: int = 0
    not_asked: int = 0  # requests the budget left unmade
    failed: int = 0  # requests that got no reply after their retries
    prompt_tokens: int = 0
    completion_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def spend(self, budget: int) -> bool:
        """Count one more real request, unless `budget` of them have been made."""
        with self.lock:
            if self.requests >= budget:
                return False
            self.requests += 1
            return True


def request_key(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class TeacherClient:
    """One per run: the budget and usage span every source and phase (asks, repairs, judge calls)."""

    def __init__(self, settings: TeacherSettings, cache_dir: Path) -> None:
        self.settings = settings
        self.cache = cache_dir / CACHE_FOLDER
        key = api_key(settings.api_key_env, "data.teacher.api_key_env")
        self.client = openai.OpenAI(base_url=settings.base_url, api_key=key, max_retries=0, timeout=settings.timeout_s)
        self.usage = Usage()
        self.json_mode: bool | None = None  # None until the server has answered a request that asked for it
        self.probe = threading.Lock()  # held by the one request that finds out, so a refusal is met once

    def _path(self, request: dict[str, Any]) -> Path:
        key = request_key(request)
        return self.cache / key[:2] / f"{key}.json"

    def _cached(self, request: dict[str, Any]) -> Reply | None:
        path = self._path(request)
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            return Reply(stored["content"], finish_reason=stored.get("finish_reason", ""))
        except (OSError, ValueError, KeyError, TypeError):  # absent, or torn by a crash older than the atomic write
            return None

    def _store(self, request: dict[str, Any], reply: Reply, usage: dict[str, int]) -> None:
        """Atomically, as each reply arrives: an interrupted run resumes from what it stored."""
        path = self._path(request)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        record = {"request": request, "content": reply.content, "finish_reason": reply.finish_reason, "usage": usage}
        partial.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
        os.replace(partial, path)

    def complete(self, messages: Chat, max_tokens: int | None = None, model: str | None = None) -> Reply:
        """The reply to one chat, from the cache when this exact request was answered before."""
        request = {
            "model": model or self.settings.model,
            "messages": messages,
            "temperature": self.settings.temperature,
            "max_tokens": max_tokens or self.settings.max_tokens,
        }
        asked = request | {"response_format": JSON_MODE}
        for candidate in (asked, request) if self.json_mode is not False else (request,):
            if reply := self._cached(candidate):
                self.usage.add(cached=1)
                return reply
        if self.json_mode is None:
            with self.probe:
                if self.json_mode is None:
                    return self._ask(asked, request)
        return self._ask(asked if self.json_mode else request, request)

    def _ask(self, request: dict[str, Any], plain: dict[str, Any]) -> Reply:
        retries = 0
        while True:
            if not self.usage.spend(self.settings.max_requests):
                self.usage.add(not_asked=1)
                return Reply(None, error=f"not asked: data.teacher.max_requests ({self.settings.max_requests}) spent")
            try:
                completion = self.client.chat.completions.create(**request)  # the client's timeout: timeout_s
            except FATAL as exc:
                raise TrainerError(f"data.teacher.base_url {self.settings.base_url}: {error_text(exc)}") from None
            except REFUSED as exc:
                if "response_format" in request and "response_format" in str(exc):
                    self.json_mode, request = False, plain  # asked once; never again this run
                    continue
                self.usage.add(failed=1)
                return Reply(None, error=error_text(exc), failed=True)
            except RETRIED as exc:
                if retries >= self.settings.max_retries:
                    self.usage.add(failed=1)
                    return Reply(None, error=f"{error_text(exc)} (after {retries} retries)", failed=True)
                time.sleep(self._wait(exc, retries))
                retries += 1
                continue
            except openai.APIError as exc:  # another status, or a 200 whose body is no chat completion
                self.usage.add(failed=1)
                return Reply(None, error=error_text(exc), failed=True)
            except ValueError as exc:  # a body declared JSON that is not: the client's json.loads
                self.usage.add(failed=1)
                return Reply(None, error=f"a 200 reply that is not JSON: {exc}", failed=True)
            if "response_format" in request:
                self.json_mode = True
            return self._received(request, completion)

    def _received(self, request: dict[str, Any], completion: Any) -> Reply:
        # A 200 whose body is no chat completion (an HTML page, `{}`) comes back as a str or an empty model: its
        # content is '' and the reply counts as malformed.
        choice = next(iter(getattr(completion, "choices", None) or []), None)
        usage = getattr(completion, "usage", None)
        tokens = {
            "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
            "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
        }
        self.usage.add(**tokens)
        content = getattr(getattr(choice, "message", None), "content", None)
        finish_reason = getattr(choice, "finish_reason", "") or ""
        reply = Reply(content if isinstance(content, str) else "", finish_reason=finish_reason)  # "": malformed
        self._store(request, reply, tokens)
        return reply

    def _wait(self, exc: Exception, retries: int) -> float:
        response = getattr(exc, "response", None)
        after = response.headers.get("retry-after") if response is not None else None
        try:
            return min(float(after), MAX_RETRY_AFTER_S)
        except (TypeError, ValueError):
            return min(self.settings.backoff_s * 2**retries, MAX_RETRY_AFTER_S)

    def complete_all(
        self, chats: list[Chat], description: str, max_tokens: int | None = None, model: str | None = None
    ) -> list[Reply]:
        """Replies to `chats` in their order, `concurrency` requests at a time, with a progress bar; a fatal answer
        or Ctrl-C asks nothing more."""
        return ask_all(
            lambda chat: self.complete(chat, max_tokens, model), chats, self.settings.concurrency, description
        )
