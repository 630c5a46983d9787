"""The compile check of teacher-written Go: does each fenced block build against the framework at the indexed commit?

`check_snippets` compiles many blocks at once in a scratch module (`module trainercheck`, see modules.py for how
the framework and its dependencies resolve offline): each block is the one file of its own package directory
(`s0000/snippet.go`, …), `fragments.prepare` having wrapped it where it is not a whole file. Per batch of at most
`BATCH_SIZE` blocks, with the build cache under `work_dir` (a rerun recompiles nothing that did not change):

1. `go list -e -json` finds the packages that cannot even be loaded (an import no local module provides, a broken
   import block); go build and go vet would refuse the whole batch for one of them, so they fail here, alone.
2. `go vet` over the rest, one run: go/types' first type error and the vet analyzers' findings, per package.
3. `go build` over those vet found a type error in: the compiler's own lines, every error (up to its limit of 10)
   instead of the first. Packages are never `main` (a `package main` file is renamed on its own line), so nothing is
   linked.

A failure's message is what go printed for that package only, its `sNNNN/snippet.go:LINE:COL` positions rewritten
to `snippet.go:LINE:COL` in the block as the teacher wrote it (the wrapper's lines taken away), at most
`MAX_MESSAGE_LINES` lines: something a model can act on. A vet finding (a Printf verb of the wrong type, a copied
lock) fails a block like a compile error. A block that could not be wrapped soundly fails with the reason.

Each block is checked on its own: a test block that uses the file block before it fails for the names it lacks (the
teacher is asked for self-contained blocks). Environment problems raise a TrainerError instead of failing snippets:
no `go`, a go command over its time limit, the framework or one of its dependencies not building here (go's lines
under a header other than `# trainercheck/sNNNN`), go failing for the scratch module itself. Callers should pass the
blocks of many conversations in one call: a call costs two or three go runs whatever its size up to `BATCH_SIZE`.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trainer.errors import TrainerError
from trainer.go.fragments import Prepared, prepare
from trainer.go.modules import SCRATCH_MODULE, closure, run_go, scratch_go_mod, toolchain

BATCH_SIZE = 64
CACHE_FOLDER = "go-check"  # under data.cache_dir: the checker's scratch modules and build cache (its work_dir)
MAX_MESSAGE_LINES = 30
SNIPPET_FILE = "snippet.go"
PACKAGE_HEADER = re.compile(rf"^# {SCRATCH_MODULE}/(s\d{{4}})$")
SPACE = re.compile(r"\s*")
POSITION = re.compile(r"(?:\./)?(s\d{4})/snippet\.go:(\d+)(?::(\d+))?")


@dataclass(frozen=True)
class CheckTarget:
    import_path: str  # the framework's module path (RepoIndex.import_path)
    root: Path  # its indexed source folder (LocalSource.root)


@dataclass(frozen=True)
class SnippetResult:
    ok: bool
    message: str  # '' when ok; else the compiler's lines for this snippet, or why it could not be checked


def _package_folders(root: Path) -> list[str]:
    """The folders under root that hold Go files of root's module (`go list root/...` would not follow the mirror's
    symlinks): testdata, vendor, `_`/`.` folders and nested modules left out."""
    folders = []
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        subfolders[:] = [
            name
            for name in subfolders
            if name not in ("testdata", "vendor") and name[0] not in "._" and not (here / name / "go.mod").exists()
        ]
        if any(name.endswith(".go") and not name.endswith("_test.go") for name in files):
            folders.append(here.relative_to(root).as_posix())
    return sorted(folders)


def _package_names(go_mod: str, target: CheckTarget, work_dir: Path) -> dict[str, list[str]]:
    """Package name → import paths, for the standard library and the framework (internal packages left out); cached
    in work_dir by the scratch go.mod, the framework's package folders and the toolchain."""
    packages = [f"{target.import_path}/{folder}".removesuffix("/.") for folder in _package_folders(target.root)]
    key = hashlib.sha256(json.dumps([str(toolchain()), go_mod, packages]).encode()).hexdigest()[:16]
    cached = work_dir / "packages" / f"{key}.json"
    if cached.is_file():
        return json.loads(cached.read_text(encoding="utf-8"))
    cached.parent.mkdir(parents=True, exist_ok=True)
    listing = Path(tempfile.mkdtemp(prefix=f".list-{key}-", dir=cached.parent))
    (listing / "go.mod").write_text(go_mod, encoding="utf-8")
    out = run_go(["list", "-e", "-f", "{{.Name}} {{.ImportPath}}", "std", *packages], listing, work_dir)
    if out.returncode != 0:
        raise TrainerError(f"`go list` of {target.import_path} at {target.root} failed: {out.stderr.strip()[:2000]}")
    names: dict[str, list[str]] = {}
    for line in out.stdout.splitlines():
        name, _, path = line.partition(" ")
        if name and name != "main" and not {"internal", "vendor"} & set(path.split("/")):
            names.setdefault(name, []).append(path)
    shutil.rmtree(listing)
    (listing.parent / f"{listing.name}.json").write_text(json.dumps(names, sort_keys=True), encoding="utf-8")
    (listing.parent / f"{listing.name}.json").replace(cached)
    return names


def _blocks(output: str) -> tuple[dict[str, list[str]], list[str]]:
    """go's output split by its `# trainercheck/sNNNN` headers: package directory → its lines; and the lines under
    any other header (a package of the framework or of a dependency that does not build)."""
    blocks: dict[str, list[str]] = {}
    foreign: list[str] = []
    current = None  # lines before any header (`go: …` notes) belong to no package
    for line in output.splitlines():
        header = PACKAGE_HEADER.match(line)
        if header:
            current = blocks.setdefault(header[1], [])
        elif line.startswith("# "):
            current = foreign
            foreign.append(line)
        elif current is not None and line.strip():
            current.append(line)
    return blocks, foreign


def _message(lines: list[str], prepared: Prepared, snippet: str) -> str:
    """go's lines for one snippet, its positions in the block as written (see the module docstring)."""
    last = max(1, snippet.count("\n") + (0 if snippet.endswith("\n") else 1))

    def position(match: re.Match[str]) -> str:
        line = min(max(int(match[2]) - prepared.header_lines, 1), last)
        return f"{SNIPPET_FILE}:{line}" + (f":{match[3]}" if match[3] else "")

    text = [POSITION.sub(position, line.removeprefix("vet: ")) for line in lines]
    if len(text) > MAX_MESSAGE_LINES:
        text = [*text[:MAX_MESSAGE_LINES], f"({len(text) - MAX_MESSAGE_LINES} more lines)"]
    return "\n".join(text)


def _load_errors(scratch: Path, work_dir: Path) -> dict[str, list[str]]:
    """Package directory → the errors that keep `go list` from loading it."""
    out = run_go(["list", "-e", "-json=ImportPath,Error,DepsErrors", "./..."], scratch, work_dir)
    if out.returncode != 0:
        raise TrainerError(f"`go list` in the scratch module {scratch} failed: {out.stderr.strip()[:2000]}")
    errors: dict[str, list[str]] = {}
    decoder, text = json.JSONDecoder(), out.stdout
    at = SPACE.match(text).end()
    while at < len(text):  # `go list -json` prints one object after another
        package, at = decoder.raw_decode(text, at)
        at = SPACE.match(text, at).end()
        found = ([package["Error"]] if "Error" in package else []) + package.get("DepsErrors", [])
        if found:
            lines = [f"{e['Pos']}: {e['Err']}" if e.get("Pos") else e["Err"] for e in found]
            errors[package["ImportPath"].rsplit("/", 1)[-1]] = lines
    return errors


def _go_over(command: str, packages: list[str], scratch: Path, work_dir: Path) -> dict[str, list[str]]:
    """`go vet`/`go build` over the packages: package directory → the lines it printed for that package."""
    if not packages:
        return {}
    out = run_go([command, *(f"./{p}" for p in packages)], scratch, work_dir)
    blocks, foreign = _blocks(out.stderr)
    if out.returncode != 0 and (foreign or not blocks):
        # Not the snippets' fault: the framework, a dependency or the scratch module itself does not build here.
        shown = "\n".join(foreign[:MAX_MESSAGE_LINES]) or out.stderr.strip()[:2000]
        raise TrainerError(f"`go {command}` in the scratch module {scratch} failed: {shown}")
    return blocks


def _check_batch(prepared: list[Prepared], scratch: Path, work_dir: Path) -> list[list[str]]:
    """go's lines for each prepared file of one batch ([] when it passed)."""
    names = [f"s{i:04d}" for i in range(len(prepared))]
    for old in scratch.glob("s[0-9][0-9][0-9][0-9]"):
        shutil.rmtree(old)
    for name, file in zip(names, prepared, strict=True):
        (scratch / name).mkdir()
        (scratch / name / SNIPPET_FILE).write_text(file.source, encoding="utf-8")
    problems = _load_errors(scratch, work_dir)
    vetted = _go_over("vet", [n for n in names if n not in problems], scratch, work_dir)
    type_errors = [n for n, lines in vetted.items() if any(line.startswith("vet: ") for line in lines)]
    compiled = _go_over("build", type_errors, scratch, work_dir)
    problems |= vetted | {n: lines for n, lines in compiled.items() if lines}
    return [problems.get(name, []) for name in names]


def check_snippets(snippets: Sequence[str], target: CheckTarget, work_dir: Path) -> list[SnippetResult]:
    """One result per snippet, in order: ok, or the compiler's (or vet's) lines for it, or why it was refused.

    `work_dir` is a cache folder kept between calls (module mirrors, the build cache, the package-name list); calls
    sharing it take turns on the scratch module."""
    if not snippets:
        return []
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    modules = closure(target.import_path, target.root.resolve())
    go_mod = scratch_go_mod(modules, work_dir)
    names = _package_names(go_mod, target, work_dir)
    prepared = [prepare(snippet, names, target.import_path) for snippet in snippets]
    results = [SnippetResult(False, p.problem) if p.problem else SnippetResult(True, "") for p in prepared]
    pending = [i for i, p in enumerate(prepared) if not p.problem]
    scratch = work_dir / "scratch" / hashlib.sha256(go_mod.encode()).hexdigest()[:16]
    scratch.mkdir(parents=True, exist_ok=True)
    with (scratch.parent / f"{scratch.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (scratch / "go.mod").write_text(go_mod, encoding="utf-8")
        for start in range(0, len(pending), BATCH_SIZE):
            batch = pending[start : start + BATCH_SIZE]
            outputs = _check_batch([prepared[i] for i in batch], scratch, work_dir)
            for index, lines in zip(batch, outputs, strict=True):
                if lines:
                    results[index] = SnippetResult(False, _message(lines, prepared[index], snippets[index]))
    return results
