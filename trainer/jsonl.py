"""JSON Lines: the one reader for every `.jsonl` a user gives (chat examples, prediction files), and the writer of
the ones the product leaves (symbols, teacher rejects, predictions).

Strict, lossless JSON per line (no duplicate keys, NaN, Infinity or lone surrogates), a leading BOM allowed, lines
streamed with a byte cap so memory is bounded by one line, and every problem located as `file:line`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from trainer.files import open_regular

MAX_LINE_BYTES = 16 * 2**20  # one conversation per line; a longer line is reported and skipped, never held whole
CHUNK_BYTES = 2**20


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for key, value in pairs:
        if key in record:
            raise ValueError(f"duplicate key {key!r} (one of its values would be lost)")
        record[key] = value
    return record


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: Python reads Infinity, and json.dumps would write that non-JSON back
        raise ValueError(f"{text[:40]} is out of a JSON number's range (it would become Infinity)")
    return value


def strict_loads(text: str) -> Any:
    """`text`'s value; ValueError (or RecursionError) with the reason when it is not strict, lossless JSON."""
    value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant, parse_float=_finite)
    try:  # "\ud800" escapes decode to lone surrogates, which no later stage can write as UTF-8
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string holds an unpaired \\u surrogate escape") from None
    return value


def json_problem(exc: Exception) -> str:
    """Why a value could not be read as strict JSON, in one phrase."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid UTF-8 (byte {exc.start})"
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc.msg} (column {exc.colno})"
    # Ours (duplicate keys, NaN, surrogates) or Python's limit on an integer's digits, cut before its advice.
    return f"invalid JSON: {str(exc).split(';')[0]}"


def _skip_line(handle: BinaryIO) -> int:
    """Read past the rest of the current line in bounded chunks; the number of bytes skipped."""
    skipped = 0
    while chunk := handle.readline(CHUNK_BYTES):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def read_jsonl(path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[str, Any, str | None]]:
    """(`file:line`, decoded value, None) for each non-blank line, or (`file:line`, None, problem) for a line that
    is not UTF-8 (a leading BOM is allowed), not strict JSON, nested too deeply or longer than `max_line_bytes`;
    (`file`, None, problem) if the file cannot be read. Streams: memory is bounded by one line, not the file."""
    try:
        handle = open_regular(path)  # a FIFO would block, a device node would never end
    except OSError as exc:
        yield str(path), None, str(exc)
        return
    with handle:
        number = 0
        while raw := handle.readline(max_line_bytes + 1):
            number += 1
            where = f"{path}:{number}"
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                size = len(raw) + _skip_line(handle)
                yield where, None, f"line of {size:,} bytes is over the {max_line_bytes:,}-byte limit; skipped"
                continue
            if not raw.strip():
                continue
            try:
                yield where, strict_loads(raw.decode("utf-8-sig" if number == 1 else "utf-8")), None
            except (ValueError, RecursionError) as exc:
                yield where, None, json_problem(exc)


def write_jsonl(path: Path, records: Iterable[Any]) -> None:
    """`records`, one JSON object per line, UTF-8 as is (readable by `read_jsonl`)."""
    with path.open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
