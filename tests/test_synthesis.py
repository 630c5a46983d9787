import json
import subprocess
import sys

import pytest
from datasets import DatasetDict

from trainer.dataset import conversation, example_id
from trainer.errors import TrainerError
from trainer.synthesis.examples import load_examples
from trainer.synthesis.split import assign_split
from trainer.synthesis.synthesize import synthesize

USER = {"role": "user", "content": "How do I create a router?"}
ANSWER = {"role": "assistant", "content": "Call chi.NewRouter()."}
CALL = {"role": "assistant", "tool_calls": [{"name": "lookup_symbol", "arguments": {"name": "NewRouter"}}]}
RESULT = {"role": "tool", "content": "func NewRouter() *Mux"}


def record(*messages, **extra):
    return json.dumps({"messages": list(messages), **extra})


BAD_RECORDS = [
    ('{"messages": [', "invalid JSON"),
    ("[1, 2]", "a record must be a JSON object"),
    (json.dumps({"messages": []}), "'messages' must be a non-empty list"),
    (json.dumps({"messages": [USER, ANSWER], "meta": 1}), "unknown key(s) ['meta']"),
    (record(USER, {"role": "robot", "content": "x"}), "messages[1]: unknown role 'robot'"),
    (record(USER, {"role": "assistant", "content": "  "}), "messages[1]: empty assistant turn"),
    (record(USER, CALL), "messages[1]: tool call with no following tool turn"),
    (record(USER, CALL, RESULT, RESULT, ANSWER), "1 tool call(s) but 2 tool turn(s) follow"),
    (record(USER, RESULT, ANSWER), "messages[1]: tool turn without a preceding assistant tool call"),
    (record(USER, ANSWER, USER), "must end with an assistant turn"),
    (record(ANSWER), "first turn after the optional system turn must be a user turn"),
    (record(USER, {"role": "system", "content": "late"}, ANSWER), "messages[1]: a system turn is only allowed first"),
    (
        record(USER, {"role": "assistant", "tool_calls": [{"name": "f", "arguments": "[1]"}]}, RESULT, ANSWER),
        "'arguments' must be an object",
    ),
    (
        record(USER, {"role": "assistant", "tool_calls": [{"arguments": {}}]}, RESULT, ANSWER),
        "needs a non-empty string 'name'",
    ),
    (record({"role": "user", "content": 3}, ANSWER), "messages[0]: 'content' must be a string"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_RECORDS)
def test_each_bad_record_is_reported_with_file_line_and_reason(examples_dir, line, reason):
    path = examples_dir / "data.jsonl"
    path.write_text(record(USER, ANSWER) + "\n\n" + line + "\n", encoding="utf-8")
    result = load_examples(examples_dir)
    assert len(result.examples) == 1
    assert len(result.errors) == 1
    assert result.errors[0].startswith(f"{path}:3: ")
    assert reason in result.errors[0]


def test_invalid_utf8_and_bom_and_crlf(examples_dir):
    (examples_dir / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + record(USER, ANSWER).encode() + b"\r\n\xff\xfe\n")
    result = load_examples(examples_dir)
    assert [e.source for e in result.examples] == [f"{examples_dir / 'a.jsonl'}:1"]
    assert result.errors == [f"{examples_dir / 'a.jsonl'}:2: not valid UTF-8 (byte 0)"]


def test_tool_call_arguments_as_json_string_are_normalised_and_reported(examples_dir):
    call = {"role": "assistant", "tool_calls": [{"name": "lookup_symbol", "arguments": '{"name": "Mux"}'}]}
    (examples_dir / "t.jsonl").write_text(record(USER, call, RESULT, ANSWER) + "\n")
    result = load_examples(examples_dir)
    assert result.examples[0].messages[1]["tool_calls"] == [{"name": "lookup_symbol", "arguments": {"name": "Mux"}}]
    assert result.normalised == [
        f"{examples_dir / 't.jsonl'}:1: messages[1].tool_calls[0]: 'arguments' given as a JSON string, "
        "converted to an object"
    ]


def test_split_depends_only_on_the_example_itself():
    ids = [example_id([{"role": "user", "content": str(i)}], None) for i in range(2000)]
    splits = [assign_split(i, "salt", 0.1, 0.1) for i in ids]
    assert abs(splits.count("test") / 2000 - 0.1) < 0.03
    assert abs(splits.count("validation") / 2000 - 0.1) < 0.03
    assert [assign_split(i, "other-salt", 0.1, 0.1) for i in ids] != splits


def test_adding_examples_never_moves_existing_ones(make_config, sample_copy):
    before = synthesize(make_config(examples=sample_copy)).dataset
    extra = [record({"role": "user", "content": f"question {i}"}, ANSWER) for i in range(30)]
    (sample_copy / "more.jsonl").write_text("\n".join(extra) + "\n")
    after = synthesize(make_config(examples=sample_copy)).dataset
    for split in ("train", "validation", "test"):
        assert set(before[split]["id"]) <= set(after[split]["id"])
    assert sum(len(after[s]) for s in after) == sum(len(before[s]) for s in before) + 30


def test_synthesize_saves_splits_manifest_and_round_trips_tool_calls(make_config):
    config = make_config()
    result = synthesize(config)
    manifest = json.loads((config.data.output_dir / "manifest.json").read_text())
    assert manifest == result.manifest
    assert sum(manifest["counts"].values()) >= 60
    assert manifest["skipped"]["count"] == 0 and manifest["duplicates"]["count"] == 0
    saved = DatasetDict.load_from_disk(str(config.data.output_dir))
    assert {s: len(saved[s]) for s in saved} == manifest["counts"]
    rows = [row for split in saved.values() for row in split]
    with_calls = [conversation(r) for r in rows if "tool_calls" in r["messages"]]
    assert with_calls, "the sample set must contain tool-use conversations"
    for messages, tools in with_calls:
        assert tools is not None
        for message in messages:
            for call in message.get("tool_calls", []):
                assert set(call) == {"name", "arguments"} and None not in call["arguments"].values()


def test_bad_records_fail_the_run_listing_all_or_are_skipped_and_counted(make_config, examples_dir):
    lines = [record(USER, ANSWER), "{oops", record(USER, {"role": "robot", "content": "x"}), record(USER, ANSWER)]
    (examples_dir / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(TrainerError) as err:
        synthesize(make_config(examples=examples_dir))
    message = str(err.value)
    assert "(2 problems)" in message
    assert f"{examples_dir / 'mixed.jsonl'}:2: invalid JSON" in message
    assert f"{examples_dir / 'mixed.jsonl'}:3: messages[1]: unknown role 'robot'" in message

    manifest = synthesize(make_config("data.on_error=skip", examples=examples_dir)).manifest
    assert manifest["skipped"]["count"] == 2
    assert manifest["duplicates"] == {
        "count": 1,
        "records": [f"{examples_dir / 'mixed.jsonl'}:4: duplicate of {examples_dir / 'mixed.jsonl'}:1"],
    }
    assert sum(manifest["counts"].values()) == 1


def test_test_examples_are_all_tested_never_trained_and_counted(make_config, examples_dir, tmp_path):
    held = tmp_path / "held"
    held.mkdir()
    questions = [{"role": "user", "content": f"How do I mount sub-router {i}?"} for i in range(20)]
    (held / "mine.jsonl").write_text("\n".join(record(q, ANSWER) for q in questions) + "\n")
    (examples_dir / "train.jsonl").write_text(record(USER, ANSWER) + "\n")
    result = synthesize(make_config(f"data.test_examples_dir={held}", examples=examples_dir))
    test = result.dataset["test"]
    assert len(test) == 20 and result.manifest["counts"]["train"] + result.manifest["counts"]["validation"] == 1
    assert {json.loads(row["provenance"])["split"] for row in test} == {"test"}
    assert result.manifest["test_files"] == {str(held / "mine.jsonl"): 20} and result.manifest["hand_written"] == 21

    with pytest.raises(TrainerError, match=r"nowhere \(data.test_examples_dir\): folder not found"):
        synthesize(make_config(f"data.test_examples_dir={tmp_path / 'nowhere'}", examples=examples_dir))


def _synthesize_cli(tmp_path, *args, cwd=None):
    """`trainer synthesize` on the debug config in a fresh process, its outputs under tmp_path."""
    from tests.helpers import DEBUG_CONFIG, REPO, set_args

    sets = set_args([f"data.output_dir={tmp_path / 'processed'}", f"data.cache_dir={tmp_path / 'cache'}"])
    return subprocess.run(
        [sys.executable, "-m", "trainer.cli", "synthesize", "--config", str(DEBUG_CONFIG), *sets, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=300,
    )


@pytest.mark.slow
def test_inputs_that_yield_nothing_are_warnings_naming_the_path(tmp_path, sample_copy):
    (sample_copy / "empty.jsonl").write_text("")
    (sample_copy / "blank.jsonl").write_text("\n  \n")
    no_go = tmp_path / "no-go"
    no_go.mkdir()
    (no_go / "notes.txt").write_text("not Go\n")
    result = _synthesize_cli(tmp_path, "--set", f"data.examples_dir={sample_copy}", "--source", no_go)
    assert result.returncode == 0, result.stderr
    assert "  held out: 10 symbols (data.heldout_symbols_fraction), 174 conversations, all in test" in result.stdout
    assert (
        "  recitation: 0 of 308 test answers share a 12-word span with a training answer (118 of 263 on the hash "
        "split; 102 moved to train)\n" in result.stdout
    )
    assert "usage: 67 of 107 uses compile (42 symbols)" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: {sample_copy / 'blank.jsonl'}: no examples in this file (empty or blank)",
        f"warning: {sample_copy / 'empty.jsonl'}: no examples in this file (empty or blank)",
        f"warning: {no_go}: no Go API found (0 files read); check the path and the source's include/exclude globs",
    ]


@pytest.mark.slow
def test_an_examples_folder_that_yields_nothing_is_an_error_when_nothing_else_is_trained_on(tmp_path):
    (tmp_path / "no-jsonl").mkdir()
    result = _synthesize_cli(
        tmp_path, "--set", "data.sources=[]", "--set", f"data.examples_dir={tmp_path / 'no-jsonl'}"
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"warning: {tmp_path / 'no-jsonl'}: no *.jsonl files in the examples folder (data.examples_dir)",
        f"error: {tmp_path / 'no-jsonl'}: no valid examples found in *.jsonl files, and no Go sources",
    ]


@pytest.mark.slow
def test_paths_in_a_config_are_relative_to_the_working_directory_not_the_file(tmp_path, sample_copy):
    """A config elsewhere naming `examples_dir: sample` reads ./sample; run from a folder without it, the missing
    folder is named with the working directory it was looked for in."""
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "sample").mkdir()  # beside the config file: not where a relative path points
    from tests.helpers import DEBUG_CONFIG

    config = config_dir / "run.yaml"
    config.write_text(f"model: {DEBUG_CONFIG.parent / '../model/tiny-debug.yaml'}\ndata: {{examples_dir: sample}}\n")
    sets = ["--set", "data.sources=[]", "--set", f"data.output_dir={tmp_path / 'processed'}"]
    args = [sys.executable, "-m", "trainer.cli", "synthesize", "--config", str(config), *sets]
    ran = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert json.loads((tmp_path / "processed" / "manifest.json").read_text())["examples_dir"] == "sample"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ran = subprocess.run(args, capture_output=True, text=True, cwd=elsewhere, timeout=300)
    assert ran.returncode == 2
    assert ran.stderr == (
        f"error: sample (data.examples_dir, relative to the working directory {elsewhere}): examples folder not "
        "found, and no Go sources\n"
    )
