"""Which Go files `go build` compiles for one target platform: go/build's rules, ported.

A file is left out when its name ends in `_GOOS`, `_GOARCH` or `_GOOS_GOARCH` for another platform, when its
`//go:build` line (or, without one, its `// +build` lines) is false for the target, when it imports "C" and cgo is
off, and when its name starts with `_` or `.`. The tags that hold are the target's GOOS and GOARCH, the OS the GOOS
implies (android → linux, ios → darwin, illumos → solaris), `unix` on Unix systems, `gc`, `cgo` when cgo is on,
the release tags `go1.1` … `go1.N` and the user's tags, as `go/build.Context.matchTag` has them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


def _names(words: str) -> frozenset[str]:
    return frozenset(words.split())


# go/build's syslist.go (Go 1.22): names a file-name suffix can constrain to.
KNOWN_OS = _names(
    "aix android darwin dragonfly freebsd hurd illumos ios js linux nacl netbsd openbsd plan9 solaris wasip1 windows "
    "zos"
)
KNOWN_ARCH = _names(
    "386 amd64 amd64p32 arm armbe arm64 arm64be loong64 mips mipsle mips64 mips64le mips64p32 mips64p32le ppc ppc64 "
    "ppc64le riscv riscv64 s390 s390x sparc sparc64 wasm"
)
UNIX_OS = _names("aix android darwin dragonfly freebsd hurd illumos ios linux netbsd openbsd solaris")
IMPLIED_OS = {"android": "linux", "ios": "darwin", "illumos": "solaris"}
GO_BUILD_LINE = re.compile(rb"^//go:build(?:[ \t]|$)")
PLUS_BUILD_LINE = re.compile(rb"^//[ \t]*\+build(?:[ \t]|$)")
TOKEN = re.compile(r"\s*(?:(\(|\)|!|&&|\|\|)|([\w.]+))")
MAX_EXPRESSION_CHARS = 2000  # hostile input: the expression parser recurses once per parenthesis


class BuildConstraintError(ValueError):
    """A `//go:build` line that is not a valid expression; go build refuses such a file too."""


@dataclass(frozen=True)
class BuildContext:
    goos: str = "linux"
    goarch: str = "amd64"
    cgo: bool = True
    tags: tuple[str, ...] = ()
    go_version: str = "1.22"  # release tags go1.1 … go1.N hold

    def satisfied(self) -> frozenset[str]:
        minor = int(self.go_version.split(".")[1])
        tags = {self.goos, self.goarch, "gc", *self.tags, *(f"go1.{n}" for n in range(1, minor + 1))}
        tags |= {IMPLIED_OS[self.goos]} if self.goos in IMPLIED_OS else set()
        tags |= {"unix"} if self.goos in UNIX_OS else set()
        tags |= {"cgo"} if self.cgo else set()
        return frozenset(tags)

    @property
    def platform(self) -> str:
        return f"{self.goos}/{self.goarch}" + (f" tags {','.join(self.tags)}" if self.tags else "")


def file_name_tags(name: str) -> list[str]:
    """The GOOS and/or GOARCH a file name constrains to (`x_linux_amd64_test.go` → ["linux", "amd64"])."""
    stem = name.split(".", 1)[0]
    if "_" not in stem:
        return []
    parts = stem[stem.index("_") :].split("_")
    if parts[-1] == "test":
        parts = parts[:-1]
    if len(parts) >= 2 and parts[-2] in KNOWN_OS and parts[-1] in KNOWN_ARCH:
        return parts[-2:]
    if parts and (parts[-1] in KNOWN_OS or parts[-1] in KNOWN_ARCH):
        return parts[-1:]
    return []


def header_constraint(source: bytes) -> str | None:
    """The file's build constraint as a `//go:build` expression: its `//go:build` line, else its `// +build` lines
    (only those in the leading comments that a blank line separates from the package clause), else None."""
    go_build, plus_build, pending, in_block = None, [], [], False
    for raw in source.split(b"\n"):
        line = raw.strip()
        if not line:
            plus_build, pending = plus_build + pending, []  # a blank line makes the lines above it count
            continue
        if in_block:
            in_block = b"*/" not in line
            continue
        if line.startswith(b"//"):
            if GO_BUILD_LINE.match(line):
                if go_build is not None:
                    raise BuildConstraintError("multiple //go:build lines")
                go_build = line[len(b"//go:build") :].decode("utf-8", "replace").strip()
            elif PLUS_BUILD_LINE.match(line):
                pending.append(line.split(b"+build", 1)[1].decode("utf-8", "replace").split())
            continue
        if line.startswith(b"/*"):
            in_block = b"*/" not in line[2:]
            continue
        break
    if go_build is not None:
        return go_build
    if not plus_build:
        return None
    # `// +build a,b c` is (a && b) || c; several lines must all hold.
    clauses = [" || ".join(" && ".join(option.split(",")) for option in fields) for fields in plus_build if fields]
    return " && ".join(f"({clause})" if "||" in clause and len(clauses) > 1 else clause for clause in clauses)


def evaluate(expression: str, tags: frozenset[str]) -> bool:
    """Whether a `//go:build` expression holds when exactly `tags` are set."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise BuildConstraintError(f"//go:build expression over {MAX_EXPRESSION_CHARS} characters")
    tokens, position = [], 0
    while position < len(expression):
        found = TOKEN.match(expression, position)
        if not found:
            if expression[position:].strip():
                raise BuildConstraintError(f"unexpected {expression[position:].strip()[:20]!r} in //go:build")
            break
        tokens.append(found.group(1) or ("tag", found.group(2)))
        position = found.end()
    tokens.append("end")
    index = 0

    def parse_or() -> bool:
        nonlocal index
        value = parse_and()
        while tokens[index] == "||":
            index += 1
            value = parse_and() or value
        return value

    def parse_and() -> bool:
        nonlocal index
        value = parse_not()
        while tokens[index] == "&&":
            index += 1
            value = parse_not() and value
        return value

    def parse_not() -> bool:
        nonlocal index
        token = tokens[index]
        index += 1
        if token == "!":
            return not parse_not()
        if token == "(":
            value = parse_or()
            if tokens[index] != ")":
                raise BuildConstraintError("missing ) in //go:build")
            index += 1
            return value
        if isinstance(token, tuple):
            return token[1] in tags
        raise BuildConstraintError(f"unexpected {token!r} in //go:build")

    value = parse_or()
    if tokens[index] != "end":
        raise BuildConstraintError(f"unexpected {tokens[index]!r} in //go:build")
    return value


def file_constraint(name: str, source: bytes) -> str:
    """The file's whole constraint (name suffix and header) as one expression; "" when it builds everywhere."""
    parts = list(file_name_tags(name))
    header = header_constraint(source)
    if header:
        parts.append(f"({header})" if "||" in header and parts else header)
    return " && ".join(parts)


def excluded_by_name(name: str, context: BuildContext) -> str | None:
    """Why go build leaves this file out by its name alone, or None."""
    if name.startswith(("_", ".")):
        return "name starts with _ or . (ignored by the go tool)"
    wanted = file_name_tags(name)
    tags = context.satisfied()
    if not all(tag in tags for tag in wanted):
        return f"build constraint: file name is for {'/'.join(wanted)}, not {context.platform}"
    return None


def excluded_by_header(source: bytes, context: BuildContext) -> str | None:
    """Why go build leaves this file out by its `//go:build` or `// +build` lines, or None. Raises
    BuildConstraintError for a malformed constraint."""
    header = header_constraint(source)
    if header is not None and not evaluate(header, context.satisfied()):
        return f"build constraint: //go:build {header} is false for {context.platform}"
    return None
