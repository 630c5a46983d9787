"""The README is true: every command in its shell blocks (```bash, ```sh, ```console) is held to one row of the
tables below, and each row is checked.

- RUN_HERE: run for real by a test in this file on the debug config, the README's arguments as written except the
  stand-ins of `stand_ins` (each named there with the reason), asserting exit 0 and a file the command promises.
- COVERED_BY: a named test elsewhere runs the same command; the node id must be one pytest collects.
- NOT_HERE: it cannot run on this machine (no cloud, no Docker engine, or it is this very suite), with the reason;
  a `sky` command's YAML must exist, declare the `--env`s and `--secret`s the README passes, and be run by the named
  test of tests/test_cloud.py.

A README command with no row fails `test_every_readme_command_has_exactly_one_row`, which says how to add one.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from tests.helpers import CHI, REPO, debug_overrides, set_args
from trainer.cli import main

README = REPO / "README.md"
SHELL_FENCES = {"bash", "sh", "shell", "console"}
STAGE_COMMANDS = {"synthesize", "train", "evaluate", "export", "pipeline"}


class Command(NamedTuple):
    text: str  # the words as a shell splits them, joined by one space: `\` continuations and `# comments` gone
    argv: list[str]
    line: int  # where it starts in the README


def shell_commands(markdown: str) -> list[Command]:
    """Every command line of the shell-fenced blocks: a ```console block's lines after `$ ` (the rest is output)."""
    commands: list[Command] = []
    fence: str | None = None  # the open block's language; None outside a block
    pending, start = "", 0
    for number, line in enumerate(markdown.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = (stripped[3:].strip().split(" ")[0].lower() or "plain") if fence is None else None
            continue
        if fence not in SHELL_FENCES:
            continue
        if not pending:
            if fence == "console":
                if not stripped.startswith("$ "):
                    continue
                stripped = stripped[2:]
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        argv = shlex.split(pending + stripped, comments=True)
        pending = ""
        if argv:
            commands.append(Command(" ".join(argv), argv, start))
    return commands


@dataclass(frozen=True)
class Row:
    pattern: str  # a regular expression the whole Command.text must match (re.fullmatch)
    test: str | None  # node id of the test that runs the command; NOT_HERE: of the test that runs its sky YAML
    why: str  # RUN_HERE: what is rewritten; COVERED_BY: what the test runs; NOT_HERE: why it cannot run here


COMMAND_LINE_TEST = "tests/test_readme.py::test_command_line_block_runs_on_the_debug_config"
CLOUD_BLOCK_TEST = "tests/test_readme.py::test_artifacts_commands_run_against_the_s3_server"
PIPELINE_TEST = "tests/test_pipeline.py::test_export_writes_a_self_contained_safetensors_folder"
SKY_TASKS_TEST = "tests/test_cloud.py::test_sky_tasks_run_end_to_end_and_the_train_task_resumes_after_a_kill"

# Named, because the tests here take their command (and its numbers) from the README through these rows.
RUN_HERE = {
    "synthesize": Row(
        r"trainer synthesize --config configs/training/default\.yaml --source \.\./my-framework",
        COMMAND_LINE_TEST,
        "default.yaml → debug.yaml (the default's chi is cloned from GitHub); ../my-framework → a Go module",
    ),
    "train": Row(
        r"trainer train --config configs/training/debug\.yaml --set training\.max_steps=(?P<steps>\d+)",
        COMMAND_LINE_TEST,
        "as written; its outputs into tmp_path",
    ),
    "evaluate": Row(
        r"trainer evaluate --checkpoint outputs/checkpoints/(?P<checkpoint>checkpoint-\d+) --limit (?P<limit>\d+) "
        r"--max-new-tokens (?P<tokens>\d+)",
        COMMAND_LINE_TEST,
        "as written (default.yaml: the checkpoint's own config gives the model); the train line's checkpoint",
    ),
    "export": Row(
        r"trainer export --checkpoint outputs/checkpoints/(?P<checkpoint>checkpoint-\d+)",
        COMMAND_LINE_TEST,
        "as written (default.yaml, as for evaluate); the train line's checkpoint",
    ),
    "artifacts ls": Row(
        r"trainer artifacts ls s3://my-bucket/runs/", CLOUD_BLOCK_TEST, "my-bucket → a bucket on the moto S3 server"
    ),
    "artifacts pull": Row(
        r"trainer artifacts pull s3://my-bucket/runs/(?P<run>[\w.-]+) --what model --out \./(?P<out>[\w.-]+)",
        CLOUD_BLOCK_TEST,
        "my-bucket → the S3 server's, holding a run whose model is the session pipeline's; ./ → tmp_path",
    ),
}
COVERED_BY = [
    Row(
        r"trainer pipeline --config configs/training/debug\.yaml",
        PIPELINE_TEST,
        "the session's pipeline_run fixture runs it (20 steps, outputs in tmp_path); the test reads its model",
    ),
    Row(
        r"curl http://\$ENDPOINT/v1/chat/completions .* -d \{\"model\": \"chi-v1\", .*\}",
        SKY_TASKS_TEST,
        "the query, against serve.yaml's task started on the S3 server's run (a vllm stand-in serving the exported "
        "model): $ENDPOINT → its address, chi-v1 → the run's name",
    ),
    Row(
        r"trainer evaluate --endpoint http://\$ENDPOINT/v1 --model chi-v1 --api-key-env VLLM_API_KEY",
        SKY_TASKS_TEST,
        "against the same server, the run's data pulled: $ENDPOINT → its address, chi-v1 → the run's name",
    ),
    Row(
        r"make demo",
        PIPELINE_TEST,
        "after installing, the demo is `trainer pipeline` on the debug config (test_make_targets_are_what_rows_say)",
    ),
]
NOT_HERE = [
    Row(r"make test", None, "it is this suite: CI's .ci/run runs `make test` on a fresh clone; here it would recurse"),
    Row(
        r"make smollm2",
        "tests/test_real_model.py::test_a_resumed_real_qlora_run_equals_an_uninterrupted_one",
        "its 20 real-model steps, evaluation against the base and export take many minutes (docs/smollm2.md: "
        "measured speed); tests/test_real_model.py runs its config, configs/training/smollm2.yaml, at 2-4 steps: "
        "QLoRA training and resume, plain LoRA and the merged export, base answers",
    ),
    Row(r"sky jobs launch .*", SKY_TASKS_TEST, "no cloud here; the test runs the task's setup and run scripts"),
    Row(r"sky serve up .*", SKY_TASKS_TEST, "no cloud here; the test runs serve.yaml's setup and run scripts"),
    Row(r"ENDPOINT=\$\(sky serve status trainer-serve --endpoint\)", None, "no cloud here: the service's address"),
]
ROWS = [*RUN_HERE.values(), *COVERED_BY, *NOT_HERE]
HOW_TO_ADD = (
    "Add a row for it in tests/test_readme.py: to RUN_HERE if a test in that file runs it on the debug config "
    "(rewrites only in stand_ins), to COVERED_BY with the node id of an existing test that runs the same command, or "
    "to NOT_HERE with the reason it cannot run on this machine (a `sky` command: the node id of the "
    "tests/test_cloud.py test that runs its YAML)."
)


def readme_commands() -> list[Command]:
    return shell_commands(README.read_text(encoding="utf-8"))


def the_command(row: Row) -> tuple[Command, re.Match]:
    """The one README command `row` matches, with the groups its pattern captures."""
    found = [(c, m) for c in readme_commands() if (m := re.fullmatch(row.pattern, c.text))]
    assert len(found) == 1, f"README.md has {len(found)} commands matching {row.pattern!r}; expected one"
    return found[0]


def test_shell_commands_are_read_as_a_shell_reads_them():
    markdown = (
        "```bash\ntrainer train --set a=1 \\\n  --set 'b=two words'   # why\n\n# a comment line\n```\n"
        "```\nnot shell\n```\n```console\n$ make demo\noutput line\n$ sky jobs launch x.yaml\n```\n"
        "```python\nimport os\n```\n"
    )
    assert [(c.text, c.line) for c in shell_commands(markdown)] == [
        ("trainer train --set a=1 --set b=two words", 2),
        ("make demo", 11),
        ("sky jobs launch x.yaml", 13),
    ]
    assert shell_commands(markdown)[0].argv[-1] == "b=two words"


def test_every_readme_command_has_exactly_one_row():
    problems = []
    for command in readme_commands():
        matching = [row for row in ROWS if re.fullmatch(row.pattern, command.text)]
        if len(matching) != 1:
            found = "no row" if not matching else f"{len(matching)} rows ({', '.join(r.pattern for r in matching)})"
            problems.append(f"README.md:{command.line}: `{command.text}` matches {found}")
    assert not problems, "\n".join([*problems, HOW_TO_ADD])
    stale = [row.pattern for row in ROWS if not any(re.fullmatch(row.pattern, c.text) for c in readme_commands())]
    assert not stale, f"rows for commands the README no longer has (remove them or fix the pattern): {stale}"


@pytest.mark.slow  # a pytest collection in a fresh process
def test_every_row_names_a_test_pytest_collects():
    named = {row.test for row in ROWS if row.test}
    files = sorted({node.split("::")[0] for node in named})
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *files],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    collected = {line.split("[")[0] for line in done.stdout.splitlines() if "::" in line}
    assert named <= collected, f"not collected: {sorted(named - collected)}\n{done.stdout[-2000:]}{done.stderr}"
    assert all(row.test for row in [*RUN_HERE.values(), *COVERED_BY]), "RUN_HERE and COVERED_BY rows name a test"


def _function_source(node_id: str) -> str:
    path, name = node_id.split("[")[0].split("::")[:2]
    module = ast.parse((REPO / path).read_text(encoding="utf-8"))
    return next(ast.unparse(f) for f in module.body if isinstance(f, ast.FunctionDef) and f.name == name)


def test_sky_commands_launch_tasks_that_declare_what_they_are_given_and_are_run_by_the_cloud_tests():
    sky_commands = [(c, row) for row in NOT_HERE for c in readme_commands() if re.fullmatch(row.pattern, c.text)]
    sky_commands = [(c, row) for c, row in sky_commands if c.argv[0] == "sky"]
    assert sky_commands, "the README launches no SkyPilot task any more: remove this test's rows"
    for command, row in sky_commands:
        (task,) = [arg for arg in command.argv if arg.endswith(".yaml")]
        assert (REPO / task).is_file(), f"README.md:{command.line}: {task} not found"
        tasks = [doc for doc in yaml.safe_load_all((REPO / task).read_text(encoding="utf-8")) if doc]  # a chain: many
        options = list(zip(command.argv, command.argv[1:], strict=False))
        for flag, section in (("--env", "envs"), ("--secret", "secrets")):
            given = {value.split("=")[0] for option, value in options if option == flag}
            declared = {name for doc in tasks for name in doc.get(section) or {}}
            assert given <= declared, f"README.md:{command.line}: {task} declares no {section} {given - declared}"
        assert row.test and Path(task).name in _function_source(row.test), f"{row.test} does not run {task}"


def test_make_targets_are_what_rows_say():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    demo = re.search(r"^demo:.*\n\t(.*)", makefile, re.MULTILINE).group(1)
    assert "trainer pipeline --config $(DEBUG_CONFIG)" in demo
    assert "DEBUG_CONFIG := configs/training/debug.yaml" in makefile
    smollm2 = re.search(r"^smollm2:.*\n\t(.*)", makefile, re.MULTILINE).group(1)
    assert "trainer pipeline --config $(SMOLLM2_CONFIG)" in smollm2
    assert "SMOLLM2_CONFIG := configs/training/smollm2.yaml" in makefile
    assert "make test" in (REPO / ".ci/run").read_text(encoding="utf-8")


def stand_ins(root: Path) -> dict[str, str]:
    """What a RUN_HERE command gets in place of a README path this machine lacks (a prefix → its stand-in)."""
    return {
        "configs/training/default.yaml": str(REPO / "configs/training/debug.yaml"),  # no network: the debug config
        "../my-framework": str(root / "my-framework"),  # a Go module written by the test
        "outputs/": f"{root}/",  # a stage command's outputs also go there (debug_overrides)
        "./": f"{root}/",  # a relative --out
    }


def run_readme(command: Command, replace: dict[str, str], root: Path, model_cache: Path) -> int:
    """`command` through `trainer.cli.main` with `replace`'s stand-ins; a stage command also gets debug_overrides, so
    that its outputs land under `root`."""
    args = []
    for arg in command.argv[1:]:
        old = next((old for old in replace if arg.startswith(old)), None)
        args.append(replace[old] + arg[len(old) :] if old else arg)
    if args[0] in STAGE_COMMANDS:
        sources = [] if CHI.is_dir() else ["data.sources=[]"]  # without Debian's chi (`make go-sources`), as conftest
        args += set_args([*debug_overrides(root, model_cache), *sources])
    return main(args)


GO_MODULE = {
    "go.mod": "module example.com/myframework\n\ngo 1.19\n",
    "router.go": (
        "// Package myframework routes requests.\npackage myframework\n\n"
        "// Router dispatches requests to handlers.\ntype Router struct{ routes map[string]func() }\n\n"
        "// NewRouter returns an empty Router.\n"
        "func NewRouter() *Router { return &Router{routes: map[string]func(){}} }\n\n"
        "// Handle registers fn for path.\nfunc (r *Router) Handle(path string, fn func()) { r.routes[path] = fn }\n"
    ),
}


@pytest.mark.slow
def test_command_line_block_runs_on_the_debug_config(tmp_path, model_cache, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # the README's paths are relative to the repository root
    (tmp_path / "my-framework").mkdir()
    for name, text in GO_MODULE.items():
        (tmp_path / "my-framework" / name).write_text(text)
    replace = stand_ins(tmp_path)

    command, _ = the_command(RUN_HERE["synthesize"])
    assert run_readme(command, replace, tmp_path, model_cache) == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "processed/manifest.json").read_text())
    added = next(source for source in manifest["sources"] if source["source"] == "my-framework")
    assert added["symbols"] >= 3  # Router, NewRouter, Router.Handle
    assert "source my-framework: 1 files" in capsys.readouterr().out

    command, train = the_command(RUN_HERE["train"])
    assert run_readme(command, replace, tmp_path, model_cache) == 0, capsys.readouterr().err
    checkpoint = f"checkpoint-{train['steps']}"
    assert (tmp_path / "checkpoints" / checkpoint / "MANIFEST.json").is_file()
    card = (tmp_path / "checkpoints" / checkpoint / "README.md").read_text()  # the model card
    assert f"| steps | {train['steps']} of {train['steps']} |" in card

    command, evaluate = the_command(RUN_HERE["evaluate"])
    assert evaluate["checkpoint"] == checkpoint, f"README.md:{command.line} evaluates a checkpoint train did not make"
    assert run_readme(command, replace, tmp_path, model_cache) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "eval/report.json").read_text())
    assert report["n_examples"] == min(int(evaluate["limit"]), manifest["counts"]["test"])
    assert f"max_new_tokens: {evaluate['tokens']}\n" in (tmp_path / "eval/resolved_config.yaml").read_text()

    command, export = the_command(RUN_HERE["export"])
    assert export["checkpoint"] == checkpoint, f"README.md:{command.line} exports a checkpoint train did not make"
    assert run_readme(command, replace, tmp_path, model_cache) == 0, capsys.readouterr().err
    (model,) = (tmp_path / "models").iterdir()  # named for the run of default.yaml, the config evaluate also used
    assert {"README.md", "config.json", "SHA256SUMS", "model.safetensors.index.json"} <= {
        p.name for p in model.iterdir()
    }


@pytest.mark.slow
def test_artifacts_commands_run_against_the_s3_server(pipeline_run, bucket, tmp_path, capsys, monkeypatch):
    from trainer.artifacts import part_uri, update_run
    from trainer.storage import upload_folder

    monkeypatch.chdir(REPO)
    command, pull = the_command(RUN_HERE["artifacts pull"])
    run_uri = f"s3://{bucket}/runs/{pull['run']}"
    exported = pipeline_run.export.output_dir / pipeline_run.training.run_name
    upload_folder(exported, part_uri(run_uri, "model"))
    update_run(run_uri, run_name=pull["run"], status="complete", step=20)
    replace = {**stand_ins(tmp_path), "s3://my-bucket/": f"s3://{bucket}/"}

    listing, _ = the_command(RUN_HERE["artifacts ls"])
    assert run_readme(listing, replace, tmp_path, pipeline_run.model.cache_dir) == 0
    (row,) = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(pull["run"] + " ")]
    assert row[1:3] == ["complete", "20"]

    assert run_readme(command, replace, tmp_path, pipeline_run.model.cache_dir) == 0, capsys.readouterr().err
    pulled = tmp_path / pull["out"]
    assert (pulled / "SHA256SUMS").read_text() == (exported / "SHA256SUMS").read_text()
    assert {p.name for p in pulled.iterdir()} == {p.name for p in exported.iterdir()}
