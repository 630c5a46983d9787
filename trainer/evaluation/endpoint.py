"""Answers from OpenAI-compatible chat-completions servers (vLLM's, `transformers serve`, a hosted API) through the
`openai` client, scored like a local model's: the same test prompts, the same parser and scorer, one report with a
column per endpoint.

Each test conversation's turns before its last assistant turn go out as chat messages in the OpenAI wire format,
with the conversation's `tools`; decoding is greedy (temperature 0) with `evaluation.max_new_tokens`. The server
renders the chat template and tokenizes, and stops at its own stop tokens (the model folder's
generation_config.json): docs/evaluation.md says where that can make its answers differ from `trainer evaluate
--model FOLDER`. No teacher-forced loss: a chat-completions server returns text, not the probabilities of the
reference's tokens. Nothing here imports torch or transformers.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from trainer.chat_api import ask_all, error_text
from trainer.config import Config, EndpointConfig
from trainer.errors import TrainerError
from trainer.evaluation.compile import compile_notes, compiler_for
from trainer.evaluation.generation import Prompt, evaluation_data, parse_assistant, prediction_records, prompts_of
from trainer.evaluation.metrics import score_groups
from trainer.evaluation.report import PREDICTIONS_FILE, finish_report, write_predictions
from trainer.redact import api_key

if TYPE_CHECKING:
    from openai import OpenAI


def wire_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training-format turns → OpenAI chat messages: tool calls as `{"id", "type": "function", "function": {"name",
    "arguments": JSON string}}`, and each tool result answering the earliest call not yet answered, by its id."""
    out: list[dict[str, Any]] = []
    unanswered: list[str] = []
    for turn, message in enumerate(messages):
        role = message["role"]
        if role == "assistant" and message.get("tool_calls"):
            calls = [
                {
                    "id": f"call_{turn}_{i}",
                    "type": "function",
                    "function": {"name": call["name"], "arguments": json.dumps(call.get("arguments", {}))},
                }
                for i, call in enumerate(message["tool_calls"])
            ]
            unanswered += [call["id"] for call in calls]
            out.append({"role": role, "content": message.get("content") or None, "tool_calls": calls})
        elif role == "tool":
            call_id = unanswered.pop(0) if unanswered else f"call_{turn}_unmatched"
            out.append({"role": role, "tool_call_id": call_id, "content": message.get("content") or ""})
        else:
            out.append({"role": role, "content": message.get("content") or ""})
    return out


def _arguments(raw: Any) -> Any:
    """A call's arguments as an object; text that is not JSON stays text, which the scorer counts as malformed."""
    if not isinstance(raw, str):
        return raw  # some servers (transformers serve) send the object itself
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def answer_message(message: Any) -> dict[str, Any]:
    """A chat-completions response message → the training data's assistant message: the server's parsed tool calls,
    then any `<tool_call>` blocks left in its text (a server started without a tool-call parser)."""
    parsed = parse_assistant(message.content or "")
    served = [
        {"name": call.function.name, "arguments": _arguments(call.function.arguments)}
        for call in message.tool_calls or []
    ]
    calls = served + parsed.get("tool_calls", [])
    if calls:
        parsed["tool_calls"] = calls
    return parsed


def client_for(endpoint: EndpointConfig, config: Config) -> OpenAI:
    """The endpoint's client; its key is read here, so a missing one is refused before any request."""
    from openai import OpenAI

    key = api_key(endpoint.api_key_env, f"endpoint {endpoint.name}: api_key_env")
    ev = config.evaluation
    return OpenAI(
        base_url=endpoint.url, api_key=key, timeout=ev.endpoint_timeout_s, max_retries=ev.endpoint_max_retries
    )


def endpoint_answers(
    endpoint: EndpointConfig, client: OpenAI, config: Config, prompts: list[Prompt]
) -> list[dict[str, Any]]:
    """One greedy answer per prompt, in order; requests run `endpoint_concurrency` at a time, and the client (from
    `client_for`) retries 408/409/429/5xx and timeouts with exponential backoff (honouring Retry-After) before a
    failure ends the run."""
    import openai

    ev = config.evaluation
    where = f"endpoint {endpoint.name} ({endpoint.url})"

    def ask(prompt: Prompt) -> dict[str, Any]:
        request: dict[str, Any] = {"tools": prompt.tools} if prompt.tools else {}
        response = client.chat.completions.create(
            model=endpoint.model,
            messages=wire_messages(prompt.messages),
            temperature=0.0,
            max_completion_tokens=ev.max_new_tokens,
            # 0 is every server's neutral value; transformers serve maps it to repetition_penalty 1.0, where the
            # model's generation_config.json would otherwise apply its own.
            frequency_penalty=0.0,
            **request,
        )
        if not response.choices:
            raise TrainerError(f"{where}: a response with no choices, for test conversation {prompt.id}")
        return answer_message(response.choices[0].message)

    try:
        return ask_all(ask, prompts, ev.endpoint_concurrency, f"Asking {endpoint.name}")
    except openai.APIError as exc:  # a status after the retries, connection refused, or timeouts
        raise TrainerError(f"{where}: {error_text(exc)}") from None


def predictions_file(position: int, endpoint: EndpointConfig) -> str:
    """The first endpoint's answers are predictions.jsonl (what the summary line describes); each other's is
    predictions.<label>.jsonl (`EndpointConfig.file_label`, which the config keeps apart), any of them re-scorable
    with `--predictions`."""
    return PREDICTIONS_FILE if position == 0 else f"predictions.{endpoint.file_label}.jsonl"


def evaluate_endpoints(config: Config) -> dict[str, Any]:
    """Score every `evaluation.endpoints` server on the test split; the first is the report's headline, the others
    are under `compared`."""
    ev = config.evaluation
    # Every client first, each used for all its endpoint's requests: a missing key is refused before anything is
    # read or sent.
    clients = [client_for(endpoint, config) for endpoint in ev.endpoints]
    rows, symbols = evaluation_data(config)
    prompts = prompts_of(rows)
    compiler = compiler_for(config)
    scored = {}
    for position, (endpoint, client) in enumerate(zip(ev.endpoints, clients, strict=True)):
        records = prediction_records(prompts, endpoint_answers(endpoint, client, config, prompts))
        scored[endpoint.name] = score_groups(records, symbols, compiler)
        compile_notes(records, compiler)
        write_predictions(records, ev.output_dir / predictions_file(position, endpoint))
    first, *others = scored
    evaluated = {"label": first, "endpoints": [{"label": e.name, "url": e.url, "model": e.model} for e in ev.endpoints]}
    compared = {"compared": {name: scored[name] for name in others}} if others else {}
    return finish_report(config, evaluated, "endpoint", {**scored[first], **compared})
