"""Index one Go repository: every package's doc and exported API, Example functions and markdown sections.

Files that cannot be used (syntax errors, binary or non-UTF-8, over the size limit, symlinks leaving the repo) are
reported with their path and reason and skipped; the run goes on. The index is cached by the files' paths, sizes
and modification times, so a second run over an unchanged tree parses nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath

from trainer import files
from trainer.data_config import GenerationSettings, GoSource
from trainer.files import FileProblem, read_regular, walk
from trainer.go import build, markdown, parser, promoted
from trainer.go.build import (
    BuildConstraintError,
    excluded_by_header,
    excluded_by_name,
    file_constraint,
)
from trainer.go.markdown import DocSection, split_sections
from trainer.go.parser import GoExample, GoSyntaxError, Symbol, exported, parse_go_file
from trainer.go.promoted import promoted_methods
from trainer.progress import track

# Part of every cache key: a change to the extraction code rebuilds cached indexes by itself.
INDEX_VERSION = hashlib.sha256(
    b"".join(
        Path(module.__file__).read_bytes()
        for module in (build, files, parser, markdown, promoted, sys.modules[__name__])
    )
).hexdigest()
# go.mod's module directive: `module x`, `module "x"`, module `x`, or the block form `module (\n x \n)`.
MODULE_DIRECTIVE = re.compile(
    r'^\s*module(?:\s+|(?=[("`]))(\(\s*)?(?:"([^"\n]+)"|`([^`\n]+)`|([^\s()"`]+))', re.MULTILINE
)
COMMENT = re.compile(r"//.*$", re.MULTILINE)
MAX_GO_MOD_BYTES = 1_000_000


@dataclass
class RepoIndex:
    import_path: str
    symbols: list[Symbol] = field(default_factory=list)
    examples: list[GoExample] = field(default_factory=list)
    sections: list[DocSection] = field(default_factory=list)
    packages: dict[str, dict[str, str]] = field(default_factory=dict)  # import path → {"name", "doc"}
    skipped: list[str] = field(default_factory=list)  # "path: reason"
    excluded: list[str] = field(default_factory=list)  # "path: reason": not compiled for the target platform
    files: int = 0
    bytes: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    def short_names(self) -> dict[str, str]:
        """How questions and answers name each package: its name, or its import path where two packages share the
        name (v1 and v2 of one module; else `x.New` would get one answer per package, contradicting each other)."""
        names = Counter(entry["name"] for entry in self.packages.values())
        return {path: path if names[entry["name"]] > 1 else entry["name"] for path, entry in self.packages.items()}

    @classmethod
    def from_json(cls, data: dict) -> RepoIndex:
        return cls(
            import_path=data["import_path"],
            symbols=[Symbol(**s) for s in data["symbols"]],
            examples=[GoExample(**e) for e in data["examples"]],
            sections=[DocSection(**s) for s in data["sections"]],
            packages=data["packages"],
            skipped=data["skipped"],
            excluded=data["excluded"],
            files=data["files"],
            bytes=data["bytes"],
        )


@cache
def _glob_regex(pattern: str) -> re.Pattern[str]:
    """`**/` spans folders (or none), `*` and `?` stay inside one path part."""
    out, index = [], 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        else:
            char = pattern[index]
            out.append("[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char))
            index += 1
    return re.compile("".join(out) + r"\Z")


def matches(path: str, patterns: list[str]) -> bool:
    return any(_glob_regex(pattern).match(path) for pattern in patterns)


def module_directive(go_mod: str) -> str | None:
    """The module path a go.mod declares, in any form go.mod allows: bare, "quoted", `raw`, or in a `( )` block."""
    found = MODULE_DIRECTIVE.search(COMMENT.sub("", go_mod))
    return next((group for group in found.groups()[1:] if group), None) if found else None


def read_go_mod(folder: Path) -> str | None:
    """`folder/go.mod`'s text; None where there is no readable one (missing, not a regular file, oversize)."""
    try:
        return read_regular(folder / "go.mod", MAX_GO_MOD_BYTES).decode("utf-8", "replace")
    except FileProblem:
        return None


def declared_module(folder: Path) -> str | None:
    """The module path `folder/go.mod` declares; None without a readable go.mod."""
    go_mod = read_go_mod(folder)
    return None if go_mod is None else module_directive(go_mod)


def module_path(root: Path, source: GoSource, name: str) -> str:
    """The import path of the repo's root package: the config's, else go.mod's `module`, else the source's name."""
    if source.import_path:
        return source.import_path.rstrip("/")
    return declared_module(root) or name


def _skipped_dir(name: str, settings: GenerationSettings) -> str | None:
    policy = {"internal": settings.include_internal, "testdata": settings.include_testdata}
    policy["vendor"] = settings.include_vendor
    if name in policy and not policy[name]:
        return f"{name}/ excluded (data.generation.include_{name})"
    if name.startswith((".", "_")):
        return "hidden folder (ignored by the go tool)"
    return None


@dataclass
class Candidates:
    files: list[str]  # relative paths to read
    skipped: list[str]  # "path: reason": folders by policy, files that are not readable regular files
    excluded: list[str]  # "path: reason": Go files go build leaves out for this platform, by their names
    modules: dict[str, str]  # folder → module path, for each folder below the root holding its own go.mod


def candidate_files(root: Path, source: GoSource, settings: GenerationSettings) -> Candidates:
    """The files to read, what was passed over and why, and the nested modules met on the way."""
    context = settings.build_context()
    modules: dict[str, str] = {}

    def folder_reason(relative: str, name: str) -> str | None:
        reason = _skipped_dir(name, settings)
        if reason is None and (declared := declared_module(root / relative)):
            modules[relative] = declared
        return reason

    def wanted(relative: str) -> bool:
        return matches(relative, source.include) and not matches(relative, source.exclude)

    walked = walk(root, folder_reason, wanted)
    chosen, excluded = [], []
    for relative in walked.files:
        reason = excluded_by_name(PurePosixPath(relative).name, context) if relative.endswith(".go") else None
        if reason:
            excluded.append(f"{relative}: {reason}")
        else:
            chosen.append(relative)
    return Candidates(chosen, walked.problems, excluded, modules)


def package_path(folder: str, import_path: str, modules: dict[str, str]) -> str:
    """A folder's import path: under the nearest folder (itself included) with a go.mod, else under the root's."""
    path = PurePosixPath(folder)
    for ancestor in (path, *path.parents):
        module = modules.get(ancestor.as_posix())
        if module is not None:
            rest = path.relative_to(ancestor).as_posix()
            return module if rest == "." else f"{module}/{rest}"
    return import_path if folder == "." else f"{import_path}/{folder}"


def fingerprint(root: Path, found: Candidates, import_path: str, source: GoSource, settings: GenerationSettings) -> str:
    digest = hashlib.sha256(f"{INDEX_VERSION}\n{import_path}\n{source.model_dump_json()}\n".encode())
    digest.update(f"{settings.model_dump_json()}\n{json.dumps(found.modules, sort_keys=True)}\n".encode())
    for relative in found.files:
        stat = (root / relative).stat()
        digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def read_source(path: Path, limit: int) -> tuple[bytes | None, str | None]:
    """A source file's bytes, or None and why it cannot be used (unreadable, binary, not UTF-8)."""
    try:
        data = read_regular(path, limit)
    except FileProblem as exc:
        return None, str(exc)
    if b"\0" in data[:8192]:
        return None, "binary file"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 (byte {exc.start})"
    return data, None


@cache
def _gofmt() -> str | None:
    return shutil.which("gofmt")


def _syntax_problems(source: bytes, unreadable: list[int]) -> list[str]:
    """What a file's unreadable declarations cost, in the Go toolchain's words where it is installed: its parser
    names the true line of a real error, and says when the file is valid Go that tree-sitter could not read."""
    if not unreadable:
        return []
    lost = f"{len(unreadable)} declaration(s) at line(s) {', '.join(map(str, unreadable))} not indexed, the rest kept"
    verdict = None
    if _gofmt():
        try:
            checked = subprocess.run([_gofmt(), "-e"], input=source, capture_output=True, timeout=60)
            verdict = checked.stderr.decode("utf-8", "replace").strip() if checked.returncode else ""
        except (OSError, subprocess.TimeoutExpired):
            verdict = None
    if verdict is None:
        return [f"syntax error near line {unreadable[0]}; {lost}"]
    if verdict == "":
        return [f"valid Go that tree-sitter cannot read; {lost}"]
    where, _, message = verdict.splitlines()[0].removeprefix("<standard input>:").partition(": ")
    return [f"syntax error at line {where} (go/parser: {message}); {lost}"]


def build_index(root: Path, found: Candidates, import_path: str, settings: GenerationSettings) -> RepoIndex:
    index = RepoIndex(import_path, skipped=list(found.skipped), excluded=list(found.excluded))
    context = settings.build_context()
    docs: dict[str, list[tuple[bool, str, str]]] = {}  # import path → (not doc.go, file, doc) per file
    names: dict[str, str] = {}
    declared: set[tuple[str, str]] = set()
    methods: dict[str, dict[str, dict[str, Symbol]]] = {}  # package → type → method name → method
    embeds: dict[str, dict[str, list[tuple[str, bool]]]] = {}  # package → exported struct → embedded local types
    for relative in track(found.files, description=f"Indexing {import_path}"):
        data, problem = read_source(root / relative, int(settings.max_file_bytes))
        if data is None:
            index.skipped.append(f"{relative}: {problem}")
            continue
        index.files += 1
        index.bytes += len(data)
        if relative.endswith(".md"):
            index.sections.extend(split_sections(data.decode("utf-8"), relative))
            continue
        try:
            reason = excluded_by_header(data, context)
        except BuildConstraintError as exc:
            index.skipped.append(f"{relative}: {exc}")
            continue
        if reason:
            index.excluded.append(f"{relative}: {reason}")
            continue
        folder = PurePosixPath(relative).parent.as_posix()
        package = package_path(folder, import_path, found.modules)
        is_test = relative.endswith("_test.go")
        try:
            parsed = parse_go_file(data, relative, package, test_file=is_test)
        except GoSyntaxError as exc:
            index.skipped.append(f"{relative}: {exc}")
            continue
        index.skipped.extend(f"{relative}: {problem}" for problem in _syntax_problems(data, parsed.unreadable))
        if parsed.imports_c and not context.cgo:
            index.excluded.append(f'{relative}: imports "C" and data.generation.cgo is off')
            continue
        if parsed.package_name in ("main", "documentation"):
            continue  # a command, not an API; `package documentation` is ignored by go build
        constraint = file_constraint(PurePosixPath(relative).name, data)
        for symbol in parsed.symbols + parsed.hidden_methods:  # go build refuses a name declared twice: first stays
            if (symbol.package, symbol.name) not in declared:
                declared.add((symbol.package, symbol.name))
                symbol.build = constraint
                if symbol.kind == "method":
                    receiver, method = symbol.name.split(".")
                    methods.setdefault(package, {}).setdefault(receiver, {})[method] = symbol
                if exported(symbol.name):
                    index.symbols.append(symbol)
        for type_name, embedded in parsed.embeds.items():
            embeds.setdefault(package, {}).setdefault(type_name, embedded)
        index.examples.extend(parsed.examples)
        if not is_test:
            names.setdefault(package, parsed.package_name)
            docs.setdefault(package, []).append(
                (not relative.endswith("/doc.go") and relative != "doc.go", relative, parsed.package_doc)
            )
    for package, package_embeds in embeds.items():
        index.symbols.extend(
            symbol
            for symbol in promoted_methods(package_embeds, methods.get(package, {}))
            if (package, symbol.name) not in declared
        )
    # go/doc's choice: doc.go's package comment when there is one, else the first file's that has one.
    for package, name in names.items():
        written = sorted(entry for entry in docs[package] if entry[2])
        index.packages[package] = {"name": name, "doc": written[0][2] if written else ""}
    return index


def index_repo(
    root: Path, source: GoSource, name: str, settings: GenerationSettings, cache_dir: Path
) -> tuple[RepoIndex, bool]:
    """The repository's index and whether it came from the cache."""
    import_path = module_path(root, source, name)
    found = candidate_files(root, source, settings)
    key = fingerprint(root, found, import_path, source, settings)
    cached = cache_dir / "index" / f"{name}-{key[:24]}.json"
    if cached.is_file():
        try:
            return RepoIndex.from_json(json.loads(cached.read_text(encoding="utf-8"))), True
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"warning: {cached}: unusable index cache ({type(exc).__name__}: {exc}); rebuilding", file=sys.stderr)
    index = build_index(root, found, import_path, settings)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial")
    partial.write_text(json.dumps(index.to_json()), encoding="utf-8")
    partial.replace(cached)
    return index, False
