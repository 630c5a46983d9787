"""Read and validate hand-written chat examples (`*.jsonl`, one `{"messages": [...]}` object per line).

Every problem is reported as `file:line: reason`. A valid record is normalised into the one shape the rest of the
pipeline uses: `{"messages": [...], "tools": [...] | None}` with tool calls as `{"name", "arguments": {...}}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from trainer.files import walk
from trainer.jsonl import json_problem, read_jsonl, strict_loads
from trainer.progress import track
from trainer.synthesis.control_tokens import ControlTokenError, screen

ROLES = ("system", "user", "assistant", "tool")
RECORD_KEYS = {"messages", "tools", "id"}
MESSAGE_KEYS = {"role", "content", "tool_calls", "name", "tool_call_id"}
TOOL_CALL_KEYS = {"name", "arguments"}
TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class InvalidRecord(ValueError):
    """Raised by `normalise_record` with the reason a record cannot be used."""


@dataclass
class Example:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    source: str  # file:line, shown in every later message about this example


@dataclass
class LoadResult:
    examples: list[Example] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "file:line: reason"
    normalised: list[str] = field(default_factory=list)  # "file:line: what was changed"
    per_file: dict[str, int] = field(default_factory=dict)  # valid records per file
    empty_files: list[str] = field(default_factory=list)  # files with no line but blank ones


def _object(value: Any, allowed: set[str], prefix: str, what: str) -> dict[str, Any]:
    """`value` if it is a JSON object whose keys are all `allowed`, else InvalidRecord."""
    if not isinstance(value, dict):
        raise InvalidRecord(f"{prefix}{what} must be a JSON object")
    unknown = set(value) - allowed
    if unknown:
        raise InvalidRecord(f"{prefix}unknown key(s) {sorted(unknown)}; expected {sorted(allowed)}")
    return value


def _check_tool_name(name: Any, where: str) -> None:
    """Tool names are written unescaped into the `<tool_call>` JSON the model learns to emit: identifiers only."""
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise InvalidRecord(f"{where}: tool name {name!r} is not an identifier (letters, digits, _; at most 64)")


def _tool_call(call: Any, where: str, notes: list[str]) -> dict[str, Any]:
    call = _object(call, TOOL_CALL_KEYS, f"{where}: ", "a tool call")
    name = call.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InvalidRecord(f"{where}: tool call needs a non-empty string 'name'")
    _check_tool_name(name, where)
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = strict_loads(arguments)
        except (ValueError, RecursionError) as exc:
            raise InvalidRecord(
                f"{where}: tool call 'arguments' is a string that is not JSON: {json_problem(exc)}"
            ) from None
        notes.append(f"{where}: 'arguments' given as a JSON string, converted to an object")
    if not isinstance(arguments, dict):
        raise InvalidRecord(f"{where}: tool call 'arguments' must be an object")
    return {"name": name, "arguments": arguments}


def _message(message: Any, index: int, notes: list[str]) -> dict[str, Any]:
    where = f"messages[{index}]"
    message = _object(message, MESSAGE_KEYS, f"{where}: ", "a message")
    role = message.get("role")
    if role not in ROLES:
        raise InvalidRecord(f"{where}: unknown role {role!r}; expected one of {', '.join(ROLES)}")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise InvalidRecord(f"{where}: 'content' must be a string")
    out: dict[str, Any] = {"role": role, "content": content or ""}
    calls = message.get("tool_calls")
    if calls is not None:
        if role != "assistant":
            raise InvalidRecord(f"{where}: only assistant turns may have 'tool_calls'")
        if not isinstance(calls, list):
            raise InvalidRecord(f"{where}: 'tool_calls' must be a list")
        out["tool_calls"] = [_tool_call(c, f"{where}.tool_calls[{i}]", notes) for i, c in enumerate(calls)]
    if role == "assistant" and not out["content"].strip() and not out.get("tool_calls"):
        raise InvalidRecord(f"{where}: empty assistant turn (no content and no tool calls)")
    if role in ("user", "system") and not out["content"].strip():
        raise InvalidRecord(f"{where}: empty {role} turn")
    for optional in ("name", "tool_call_id"):
        if optional in message:
            if role != "tool" or not isinstance(message[optional], str):
                raise InvalidRecord(f"{where}: {optional!r} is only allowed as a string on tool turns")
            out[optional] = message[optional]
    return out


def _check_order(messages: list[dict[str, Any]]) -> None:
    """Turn order the chat template and the loss mask rely on."""
    for i, message in enumerate(messages):
        role = message["role"]
        previous = messages[i - 1]["role"] if i else None
        if role == "system" and i != 0:
            raise InvalidRecord(f"messages[{i}]: a system turn is only allowed first")
        if role == "tool" and not (
            previous == "tool" or (previous == "assistant" and messages[i - 1].get("tool_calls"))
        ):
            raise InvalidRecord(f"messages[{i}]: tool turn without a preceding assistant tool call")
        if message.get("tool_calls"):
            answers = 0
            while i + 1 + answers < len(messages) and messages[i + 1 + answers]["role"] == "tool":
                answers += 1
            if answers == 0:
                raise InvalidRecord(f"messages[{i}]: tool call with no following tool turn")
            if answers != len(message["tool_calls"]):
                raise InvalidRecord(
                    f"messages[{i}]: {len(message['tool_calls'])} tool call(s) but {answers} tool turn(s) follow"
                )
    first = 1 if messages[0]["role"] == "system" else 0
    if first >= len(messages) or messages[first]["role"] != "user":
        raise InvalidRecord("the first turn after the optional system turn must be a user turn")
    if messages[-1]["role"] != "assistant":
        raise InvalidRecord("the conversation must end with an assistant turn")


def normalise_record(
    record: Any, notes: list[str] | None = None, escape_control_tokens: bool = False
) -> tuple[list[dict[str, Any]], Any]:
    """Validate one decoded JSON record; return (messages, tools) or raise InvalidRecord."""
    notes = notes if notes is not None else []
    record = _object(record, RECORD_KEYS, "", "a record")
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRecord("'messages' must be a non-empty list")
    normalised = [_message(m, i, notes) for i, m in enumerate(messages)]
    _check_order(normalised)
    tools = record.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise InvalidRecord("'tools' must be a list of objects (function definitions)")
    for index, tool in enumerate(tools or []):
        function = tool.get("function", tool)
        if isinstance(function, dict) and "name" in function:
            _check_tool_name(function["name"], f"tools[{index}]")
    try:
        normalised, tools, note = screen(normalised, tools or None, escape_control_tokens)
    except ControlTokenError as exc:
        raise InvalidRecord(str(exc)) from None
    notes.extend([note] if note else [])
    return normalised, tools


def load_examples(directory: Path, escape_control_tokens: bool = False) -> LoadResult:
    """Read every `*.jsonl` file under `directory` (sorted, recursive) and validate each line; files and folders
    that cannot be read are errors naming them."""
    result = LoadResult()
    walked = walk(directory, lambda _relative, _name: None, lambda relative: relative.endswith(".jsonl"), False)
    result.errors.extend(f"{directory}/{problem}" for problem in walked.problems)
    found = [directory / relative for relative in sorted(walked.files, key=lambda r: PurePosixPath(r).parts)]
    for path in track(found, description="Reading examples"):
        result.per_file[str(path)] = 0
        lines = 0
        for where, record, problem in read_jsonl(path):
            lines += 1
            if problem:
                result.errors.append(f"{where}: {problem}")
                continue
            notes: list[str] = []
            try:
                messages, tools = normalise_record(record, notes, escape_control_tokens)
            except InvalidRecord as exc:
                result.errors.append(f"{where}: {exc}")
                continue
            result.normalised.extend(f"{where}: {note}" for note in notes)
            result.examples.append(Example(messages=messages, tools=tools, source=where))
            result.per_file[str(path)] += 1
        if not lines:
            result.empty_files.append(str(path))
    return result
