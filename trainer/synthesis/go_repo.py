"""Index one Go repository: every package's doc and exported API, Example functions and markdown sections.

Files that cannot be used (syntax errors, binary or non-UTF-8, over the size limit, symlinks leaving the repo) are
reported with their path and reason and skipped; the run goes on. The index is cached by the files' paths, sizes
and modification times, so a second run over an unchanged tree parses nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath

from trainer.config import GenerationSettings, GoSource
from trainer.synthesis import go_parser, markdown
from trainer.synthesis.go_parser import GoExample, GoSyntaxError, Symbol, parse_go_file
from trainer.synthesis.markdown import DocSection, split_sections

# Part of every cache key: a change to the extraction code rebuilds cached indexes by itself.
INDEX_VERSION = hashlib.sha256(
    b"".join(Path(module.__file__).read_bytes() for module in (go_parser, markdown, sys.modules[__name__]))
).hexdigest()
MODULE_LINE = re.compile(r"^\s*module\s+\"?([^\s\"]+)\"?", re.MULTILINE)


@dataclass
class RepoIndex:
    import_path: str
    symbols: list[Symbol] = field(default_factory=list)
    examples: list[GoExample] = field(default_factory=list)
    sections: list[DocSection] = field(default_factory=list)
    packages: dict[str, dict[str, str]] = field(default_factory=dict)  # import path → {"name", "doc"}
    skipped: list[str] = field(default_factory=list)  # "path: reason"
    files: int = 0
    bytes: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> RepoIndex:
        return cls(
            import_path=data["import_path"],
            symbols=[Symbol(**s) for s in data["symbols"]],
            examples=[GoExample(**e) for e in data["examples"]],
            sections=[DocSection(**s) for s in data["sections"]],
            packages=data["packages"],
            skipped=data["skipped"],
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


def module_path(root: Path, source: GoSource, name: str) -> str:
    """The import path of the repo's root package: the config's, else go.mod's `module`, else the source's name."""
    if source.import_path:
        return source.import_path.rstrip("/")
    go_mod = root / "go.mod"
    if go_mod.is_file():
        found = MODULE_LINE.search(go_mod.read_text(encoding="utf-8", errors="replace"))
        if found:
            return found.group(1)
    return name


def _skipped_dir(name: str, settings: GenerationSettings) -> str | None:
    policy = {"internal": settings.include_internal, "testdata": settings.include_testdata}
    policy["vendor"] = settings.include_vendor
    if name in policy and not policy[name]:
        return f"{name}/ excluded (data.generation.include_{name})"
    if name.startswith((".", "_")):
        return "hidden folder (ignored by the go tool)"
    return None


def candidate_files(root: Path, source: GoSource, settings: GenerationSettings) -> tuple[list[str], list[str]]:
    """Relative paths to read, and what was passed over with why (folders by policy, symlinks out of the repo)."""
    chosen, skipped = [], []
    resolved_root = root.resolve()
    for folder, dirs, files in os.walk(root):
        relative_folder = Path(folder).relative_to(root)
        for name in sorted(dirs):
            reason = _skipped_dir(name, settings)
            if reason or Path(folder, name).is_symlink():
                dirs.remove(name)
                path = (relative_folder / name).as_posix()
                skipped.append(f"{path}: {reason or 'symlinked folder not followed'}")
        dirs.sort()
        for name in sorted(files):
            relative = (relative_folder / name).as_posix()
            if not matches(relative, source.include) or matches(relative, source.exclude):
                continue
            path = Path(folder, name)
            if path.is_symlink() and not path.resolve().is_relative_to(resolved_root):
                skipped.append(f"{relative}: symlink pointing outside the repository")
                continue
            chosen.append(relative)
    return chosen, skipped


def fingerprint(root: Path, files: list[str], import_path: str, source: GoSource, settings: GenerationSettings) -> str:
    digest = hashlib.sha256(f"{INDEX_VERSION}\n{import_path}\n{source.model_dump_json()}\n".encode())
    digest.update(settings.model_dump_json().encode())
    for relative in files:
        stat = (root / relative).stat()
        digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_text(path: Path, limit: int) -> tuple[bytes | None, str | None]:
    size = path.stat().st_size
    if size > limit:
        return None, f"{size} bytes, over data.generation.max_file_bytes ({limit})"
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None, "binary file"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 (byte {exc.start})"
    return data, None


def build_index(root: Path, files: list[str], import_path: str, limit: int) -> RepoIndex:
    index = RepoIndex(import_path)
    docs: dict[str, list[tuple[bool, str, str]]] = {}  # import path → (not doc.go, file, doc) per file
    names: dict[str, str] = {}
    declared: set[tuple[str, str]] = set()
    for relative in files:
        data, problem = _read_text(root / relative, limit)
        if data is None:
            index.skipped.append(f"{relative}: {problem}")
            continue
        index.files += 1
        index.bytes += len(data)
        if relative.endswith(".md"):
            index.sections.extend(split_sections(data.decode("utf-8"), relative))
            continue
        folder = PurePosixPath(relative).parent.as_posix()
        package = import_path if folder == "." else f"{import_path}/{folder}"
        is_test = relative.endswith("_test.go")
        try:
            parsed = parse_go_file(data, relative, package, test_file=is_test)
        except GoSyntaxError as exc:
            index.skipped.append(f"{relative}: {exc}")
            continue
        if parsed.package_name == "main":
            continue  # a command, not an API
        for symbol in parsed.symbols:  # build-tag variants declare a symbol in several files: the first one stays
            if (symbol.package, symbol.name) not in declared:
                declared.add((symbol.package, symbol.name))
                index.symbols.append(symbol)
        index.examples.extend(parsed.examples)
        if not is_test:
            names.setdefault(package, parsed.package_name)
            docs.setdefault(package, []).append(
                (not relative.endswith("/doc.go") and relative != "doc.go", relative, parsed.package_doc)
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
    files, passed_over = candidate_files(root, source, settings)
    key = fingerprint(root, files, import_path, source, settings)
    cached = cache_dir / "index" / f"{name}-{key[:24]}.json"
    if cached.is_file():
        return RepoIndex.from_json(json.loads(cached.read_text(encoding="utf-8"))), True
    index = build_index(root, files, import_path, int(settings.max_file_bytes))
    index.skipped = passed_over + index.skipped
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".partial")
    partial.write_text(json.dumps(index.to_json()), encoding="utf-8")
    partial.replace(cached)
    return index, False
