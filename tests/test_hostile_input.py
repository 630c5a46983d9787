"""Hostile input to the two readers every run starts with: chat-example JSONL and config YAML.

Property tests (hypothesis, derandomized so CI is reproducible) feed arbitrary bytes and near-valid structures; each
must give valid records or an error naming file, line (or key) and reason, never another exception or a hang.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainer.config import SECTIONS, Config
from trainer.config_file import load_config
from trainer.errors import TrainerError
from trainer.jsonl import MAX_LINE_BYTES, read_jsonl
from trainer.synthesis.examples import ROLES, load_examples

PROPERTY = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=2000,  # milliseconds per example: a hang or a quadratic path fails here
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
)
tool_calls = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["lookup_docs", "", 3])},
        optional={"arguments": st.dictionaries(st.text(max_size=5), json_scalars, max_size=3) | st.text(max_size=30)},
    ),
    max_size=2,
)
messages = st.fixed_dictionaries(
    {"role": st.sampled_from([*ROLES, "robot", None])},
    optional={
        "content": st.text(max_size=40) | st.none() | st.integers(),
        "tool_calls": tool_calls,
        "tool_call_id": st.text(max_size=5),
        "extra": json_scalars,
    },
)
records = st.fixed_dictionaries(
    {"messages": st.lists(messages, max_size=6)}, optional={"tools": json_values, "id": json_scalars}
)
# A line: arbitrary bytes, any JSON value, or a near-valid record, sometimes cut short or given a BOM.
lines = st.one_of(
    st.binary(max_size=120),
    json_values.map(lambda value: json.dumps(value).encode()),
    records.map(lambda record: json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.tuples(records, st.integers(0, 200)).map(lambda rc: json.dumps(rc[0]).encode()[: rc[1]]),
)


@pytest.mark.slow
@PROPERTY
@given(body=st.lists(lines, max_size=8), newline=st.sampled_from([b"\n", b"\r\n"]), bom=st.booleans())
def test_any_bytes_give_records_or_errors_naming_file_and_line(tmp_path, body, newline, bom):
    path = tmp_path / "examples.jsonl"
    content = (b"\xef\xbb\xbf" if bom else b"") + newline.join(line.replace(b"\n", b" ") for line in body)
    path.write_bytes(content)
    result = load_examples(tmp_path)

    nonblank = {number for number, raw in enumerate(content.split(b"\n"), start=1) if raw.strip()}
    from_examples = [int(e.source.rsplit(":", 1)[1]) for e in result.examples]
    from_errors = [int(error[len(str(path)) + 1 :].split(":", 1)[0]) for error in result.errors]
    assert all(error.startswith(f"{path}:") for error in result.errors)
    # Every non-blank line is exactly one record or one error: nothing dropped, nothing counted twice.
    assert sorted(from_examples + from_errors) == sorted(nonblank)
    assert result.per_file == {str(path): len(result.examples)}
    for example in result.examples:
        roles = [m["role"] for m in example.messages]
        assert roles[-1] == "assistant" and roles[roles[0] == "system"] == "user"
        json.dumps(example.messages, ensure_ascii=False).encode("utf-8")  # writable by every later stage


def test_each_hostile_line_gets_its_own_reason(tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    hostile = [
        good.replace('"q"', '"q\\u0000"'),  # an escaped NUL is text: kept
        good.replace('"q"', '"q\x00"'),
        good.replace('"content": "q"', '"content": "q", "content": "r"'),
        good.replace('"q"', '"\\ud800"'),
        '{"messages": [], "id": NaN}',
        '{"id": ' + "9" * 5000 + "}",
        "[" * 100_000,
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_text("\n".join(hostile) + "\n", encoding="utf-8")
    result = load_examples(tmp_path)
    assert [e.source for e in result.examples] == [f"{path}:1"]
    assert result.examples[0].messages[0]["content"] == "q\x00"
    reasons = [error.split(": ", 1)[1] for error in result.errors]
    assert reasons == [
        "invalid JSON: Invalid control character at (column 45)",
        "invalid JSON: duplicate key 'content' (one of its values would be lost)",
        "invalid JSON: a string holds an unpaired \\u surrogate escape",
        "invalid JSON: NaN is not a JSON number",
        "invalid JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits",
        "JSON nested too deeply",
    ]


def test_a_100_mb_line_is_reported_and_skipped_in_bounded_memory(tmp_path):
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    path = tmp_path / "big.jsonl"
    with path.open("wb") as out:
        out.write(good.encode() + b"\n" + b'{"messages": "')
        for _ in range(100):
            out.write(b"x" * 2**20)
        out.write(b'"}\n' + good.encode())
    tracemalloc.start()
    outcomes = list(read_jsonl(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [(where, problem) for where, _, problem in outcomes] == [
        (f"{path}:1", None),
        (f"{path}:2", f"line of {100 * 2**20 + 17:,} bytes is over the {MAX_LINE_BYTES:,}-byte limit; skipped"),
        (f"{path}:3", None),
    ]
    # readline's buffer and its copy: two of the 16 MiB limit, whatever the line's length.
    assert peak < 3 * MAX_LINE_BYTES, f"peak {peak / 2**20:.0f} MiB while reading a 100 MiB line"


# --- config YAML -----------------------------------------------------------------------------------------------

field_names = [name for model in Config.model_fields.values() for name in model.annotation.model_fields]
yaml_keys = st.sampled_from([*SECTIONS, *field_names, "<<"]) | st.text(max_size=6)
yaml_trees = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(yaml_keys, inner))
config_texts = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(yaml_keys, yaml_trees, max_size=5).map(lambda tree: yaml.safe_dump(tree).encode()),
    st.text(alphabet="{}[]:,&*!|>-'\"\n #ab1", max_size=80).map(str.encode),
)


@PROPERTY
@given(text=config_texts)
def test_any_config_bytes_give_a_config_or_an_error_naming_the_file(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_bytes(text)
    try:
        load_config(path)
    except TrainerError as exc:
        assert str(path) in str(exc)


@PROPERTY
@given(override=st.text(max_size=40))
def test_any_set_override_gives_a_config_or_an_error_naming_it(override):
    try:
        load_config(Path("configs/training/debug.yaml"), [override])
    except TrainerError as exc:
        assert "--set" in str(exc)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("training: {}\ntraining: {max_steps: 3}\n", ":2: invalid YAML: duplicate key 'training'"),
        ("training:\n  max_steps: 1\n  max_steps: 2\n", ":3: invalid YAML: duplicate key 'max_steps'"),
        ("training: &loop {x: *loop}\n", ": a YAML alias refers to a value that contains it"),
        (
            "a: &a [1,1,1,1,1,1,1,1,1,1]\n"
            + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True)),
            ": more than 100,000 values after expanding aliases",
        ),
        ("training: {max_steps: " + "9" * 5000 + "}\n", ": invalid YAML: Exceeds the limit (4300 digits)"),
        ("training: " + "[" * 5000 + "\n", ": invalid YAML: nested too deeply"),
        ("training: !!python/object/apply:os.system [id]\n", ":1: invalid YAML: could not determine a constructor"),
        ('model: "a\\0b"\n', ": model: "),
    ],
)
def test_hostile_yaml_is_refused_with_file_and_reason(tmp_path, text, reason):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(TrainerError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}{reason}")


@pytest.mark.slow
def test_a_mapping_of_100_000_keys_is_refused_in_seconds(tmp_path):
    path = tmp_path / "wide.yaml"
    path.write_text("training:\n" + "".join(f"  k{i}: 1\n" for i in range(100_000)), encoding="utf-8")
    started = time.perf_counter()
    with pytest.raises(TrainerError, match="more than 100,000 values"):
        load_config(path)
    assert time.perf_counter() - started < 30  # the duplicate-key check was quadratic: about a minute here
