"""Hostile files and folders in a Go source and in the examples folder: symlink loops, dangling symlinks, names that
are not UTF-8, folders nested 1,000 deep, FIFOs, device nodes, unreadable files and folders, a corrupt index cache.
Each ends with the file skipped and named with its reason, the run going on; never a traceback or a hang."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.data_config import GenerationSettings, GoSource
from trainer.go.repo import index_repo

DEPTH = 1000
GOOD_EXAMPLE = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
# Root reads anything unless it lacks CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH; setpriv drops them from the bounding set.
NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
needs_setpriv = pytest.mark.skipif(
    bool(NO_DAC) and shutil.which("setpriv") is None, reason="root without setpriv cannot make a file unreadable"
)


def unplant(folder: Path) -> None:
    """Undo what pytest's recursive cleanup cannot: the unreadable folder and the 1,000-deep chain."""
    (folder / "closed").chmod(0o755)
    for level in range(DEPTH, 0, -1):
        shutil.rmtree(folder.joinpath(*["d"] * level))


def plant_hostile_files(folder: Path, suffix: str, body: str) -> dict[str, str]:
    """Hostile entries named `*{suffix}` in `folder`, one good file 1,000 folders deep; the reasons expected."""
    (folder / f"loop_a{suffix}").symlink_to(f"loop_b{suffix}")
    (folder / f"loop_b{suffix}").symlink_to(f"loop_a{suffix}")
    (folder / f"gone{suffix}").symlink_to("nowhere")
    (folder / os.fsdecode(b"caf\xe9" + suffix.encode())).write_text(body)
    os.mkfifo(folder / f"pipe{suffix}")
    os.mknod(folder / f"zero{suffix}", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero: never ends
    (folder / f"locked{suffix}").write_text(body)
    (folder / f"locked{suffix}").chmod(0)
    (folder / "closed").mkdir()
    (folder / "closed" / f"inside{suffix}").write_text(body)
    (folder / "closed").chmod(0)
    deep = folder
    for _ in range(DEPTH):  # Path.mkdir(parents=True) recurses once per level, past Python's limit
        deep = deep / "d"
        deep.mkdir()
    (deep / f"deep{suffix}").write_text(body)
    return {
        f"loop_a{suffix}": "cannot read: Too many levels of symbolic links",
        f"loop_b{suffix}": "cannot read: Too many levels of symbolic links",
        f"gone{suffix}": "dangling symlink: No such file or directory",
        f"caf\\xe9{suffix}": "name is not valid UTF-8",
        f"pipe{suffix}": "not a regular file (a FIFO)",
        f"zero{suffix}": "not a regular file (a character device)",
        f"locked{suffix}": "cannot read: Permission denied",
        "closed": "cannot read folder: Permission denied",
    }


@pytest.fixture
def hostile_repo(tmp_path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "repo"
    root.mkdir()
    (root / "go.mod").write_text("module example.com/hostile\n")
    (root / "ok.go").write_text("package hostile\n\n// Fine is fine.\nfunc Fine() {}\n")
    expected = plant_hostile_files(root, ".go", "package d\n\n// Deep is deep.\nfunc Deep() {}\n")
    yield root, expected
    unplant(root)


def synthesize_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    sets = [f"data.output_dir={tmp_path / 'out'}", f"data.cache_dir={tmp_path / 'cache'}", "data.sources=[]"]
    sets += [f"data.examples_dir={tmp_path / 'examples'}", "data.on_error=skip"]
    command = [*NO_DAC, sys.executable, "-m", "trainer.cli", "synthesize", *args]
    command += [arg for item in sets for arg in ("--set", item)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})


@needs_setpriv
def test_hostile_go_files_are_skipped_named_and_counted_and_the_run_goes_on(hostile_repo, tmp_path):
    root, expected = hostile_repo
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "good.jsonl").write_text(GOOD_EXAMPLE + "\n")
    done = synthesize_cli(tmp_path, "--source", str(root))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "cannot write" not in done.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    skipped = dict(record.removeprefix("repo: ").split(": ", 1) for record in manifest["skipped_files"]["records"])
    assert skipped == expected
    assert manifest["skipped_files"]["count"] == len(expected)
    symbols = [json.loads(line) for line in (tmp_path / "out" / "symbols.jsonl").read_text().splitlines()]
    assert {(s["package"], s["name"]) for s in symbols} == {
        ("example.com/hostile", "Fine"),
        ("example.com/hostile/" + "/".join(["d"] * DEPTH), "Deep"),
    }


@needs_setpriv
def test_hostile_example_files_are_errors_naming_them_and_the_good_ones_load(tmp_path):
    examples = tmp_path / "examples"
    examples.mkdir()
    expected = plant_hostile_files(examples, ".jsonl", GOOD_EXAMPLE + "\n")
    (examples / "good.jsonl").write_text(GOOD_EXAMPLE.replace('"q"', '"q2"') + "\n")
    try:
        done = synthesize_cli(tmp_path)
    finally:
        unplant(examples)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    errors = dict(record.removeprefix(f"{examples}/").split(": ", 1) for record in manifest["skipped"]["records"])
    assert errors == expected
    deep = str(examples.joinpath(*["d"] * DEPTH, "deep.jsonl"))
    assert manifest["files"] == {deep: 1, str(examples / "good.jsonl"): 1, str(examples / "locked.jsonl"): 0}
    assert manifest["hand_written"] == 2


def test_a_corrupt_index_cache_is_rebuilt_with_a_warning(tmp_path, capsys):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "ok.go").write_text("package ok\n\n// Fine is fine.\nfunc Fine() {}\n")
    source, settings, cache = GoSource(url=str(root)), GenerationSettings(), tmp_path / "cache"
    first, _ = index_repo(root, source, "ok", settings, cache)
    (cached_file,) = (cache / "index").iterdir()
    for corrupt in (b'{"import_path": "ok", "symbols": [{"nam', b"\xff\xfe", b"[1, 2]", b'{"import_path": "ok"}'):
        cached_file.write_bytes(corrupt)
        again, from_cache = index_repo(root, source, "ok", settings, cache)
        assert from_cache is False and again.to_json() == first.to_json()
        assert f"warning: {cached_file}: unusable index cache" in capsys.readouterr().err
        assert index_repo(root, source, "ok", settings, cache)[1] is True  # the rebuilt cache is used again
