"""A scripted chat-completions server (http.server in a thread) for what a real model cannot do on cue: fixed
replies, 429 and 500, slow answers, pages that are no chat completion. Speaks the OpenAI protocol the `openai` client
uses; a real server for the rest is `tests.helpers.openai_server`."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW, SLOW_S = object(), 1.5  # a scripted answer that comes later than a client waiting 0.5 s waits


def chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def reply(*conversations: dict) -> str:
    return json.dumps({"conversations": list(conversations)})


def plain(body: dict) -> str:
    """For requests a test does not script: a conversation that passes every check, with a question of its own, or
    to a judge a good score."""
    if body["messages"][0]["content"].startswith("You grade"):
        return json.dumps({"score": 9, "reason": "fine"})
    digest = hashlib.sha256(body["messages"][-1]["content"].encode()).hexdigest()[:8]
    return reply(chat(f"How do I use this? {digest}", "Read the material above, then write a handler."))


def completion(message: dict, model: str = "scripted") -> dict:
    """A chat.completion response body whose one choice is the assistant `message`."""
    usage = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model, "usage": usage,
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}],
    }  # fmt: skip


class ScriptedTeacher:
    """A chat-completions server: `rules` map a text in the request's last message to the replies to give in turn
    (a str is a reply's content; (status, body) an HTTP error; bytes a raw 200 body; SLOW an answer later than the
    client waits); unmatched requests get `plain`."""

    def __init__(self, rules: dict[str, list] | None = None, refuse_json_mode: bool = False):
        self.rules = {key: list(value) for key, value in (rules or {}).items()}
        self.refuse_json_mode = refuse_json_mode
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()

    def answer(self, body: dict) -> tuple[int, dict]:
        if self.refuse_json_mode and "response_format" in body:
            return 400, {"error": {"message": "response_format is not supported", "type": "invalid_request_error"}}
        last = body["messages"][-1]["content"]
        # The longest matching text wins, so a repair (whose last message quotes no material) is told apart.
        matched = sorted((key for key in self.rules if key in last), key=len, reverse=True)
        given = self.rules[matched[0]].pop(0) if matched and self.rules[matched[0]] else plain(body)
        if isinstance(given, tuple):
            return given
        if given is SLOW:
            return 0, {}
        if isinstance(given, bytes):  # a 200 that is no chat completion
            return 200, given
        return 200, completion({"content": given}, body["model"])

    @contextmanager
    def serving(self) -> Iterator[str]:
        script = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with script.lock:
                    script.requests.append(body)
                    script.headers.append({k.lower(): v for k, v in self.headers.items()})
                    status, payload = script.answer(body)
                if status == 0:  # SLOW: the client has given up by the time this would be answered
                    time.sleep(SLOW_S)
                    return
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                page = isinstance(payload, bytes) and payload.startswith(b"<")
                self.send_header("Content-Type", "text/html" if page else "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/v1"
        finally:
            server.shutdown()
            server.server_close()
