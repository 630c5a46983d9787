"""The API index is what `go build` compiles for one platform: crafted repos and real packages (golang.org/x/sys,
golang.org/x/exp, parts of the standard library) against the Go toolchain's own view (go/build + go/doc, apidump.go)
under the same build context."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from trainer.api_index import SymbolIndex
from trainer.data_config import GenerationSettings, GoSource
from trainer.go.build import (
    BuildConstraintError,
    BuildContext,
    evaluate,
    file_name_tags,
    header_constraint,
)
from trainer.go.repo import index_repo

GOCODE = Path("/usr/share/gocode/src")
APIDUMP = Path(__file__).parent / "go" / "apidump.go"
GO = shutil.which("go")
needs_go = pytest.mark.skipif(GO is None, reason="no Go toolchain: run `make go-sources`")
KINDS = ("func", "method", "type", "const", "var")


@pytest.fixture(scope="module")
def toolchain(tmp_path_factory) -> tuple[Path, str, dict[str, str]]:
    """apidump built once, the toolchain's Go version (its release tags) and the environment to run it in."""
    work = tmp_path_factory.mktemp("apidump")
    env = {**os.environ, "GOCACHE": str(work / "gocache"), "GO111MODULE": "off", "GOFLAGS": "", "CGO_ENABLED": "1"}
    binary = work / "apidump"
    subprocess.run(["go", "build", "-o", str(binary), str(APIDUMP)], check=True, env=env, cwd=work)
    version = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True, env=env).stdout
    return binary, ".".join(version.strip().removeprefix("go").split(".")[:2]), env


def go_view(toolchain, root: Path, module: str, settings: GenerationSettings) -> tuple[set, dict[str, str]]:
    """(package, kind, name) of every exported name, and each package's name, as go/build + go/doc see them."""
    binary, _, env = toolchain
    flags = ["-goos", settings.goos, "-goarch", settings.goarch, "-tags", ",".join(settings.build_tags)]
    flags += ["-cgo"] if settings.cgo else []
    flags += ["-internal"] if settings.include_internal else []
    flags += ["-promoted"]  # methods promoted from unexported embedded types, which go/doc shows and we index
    dump = subprocess.run([binary, *flags, str(root), module], capture_output=True, text=True, check=True, env=env)
    rows = {tuple(line.split("\t")) for line in dump.stdout.splitlines()}
    return {row for row in rows if row[1] != "package"}, {row[0]: row[2] for row in rows if row[1] == "package"}


def our_view(root: Path, module: str, settings: GenerationSettings, cache: Path):
    index, _ = index_repo(root, GoSource(url=str(root), import_path=module), "repo", settings, cache)
    names = {package: entry["name"] for package, entry in index.packages.items()}
    return index, {(s.package, s.kind, s.name) for s in index.symbols}, names


PLATFORM_REPO = {
    "go.mod": "module example.com/plat\n",
    "plat_linux.go": 'package plat\n\n// Name returns linux.\nfunc Name() string { return "linux" }\n',
    "plat_darwin.go": 'package plat\n\n// Name returns darwin.\nfunc Name() string { return "darwin" }\n',
    "plat_arm64.go": "package plat\n\n// Wide is arm64 only.\nconst Wide = 64\n",
    "a_gen.go": "//go:build ignore\n\npackage main\n\nfunc Generator() {}\n",
    "b_old.go": "// +build ignore\n\npackage plat\n\ntype Stat_t C.struct_stat\n",
    "c_real.go": "package plat\n\n// Stat_t is a file's status.\ntype Stat_t struct{ Size int64 }\n",
    "custom.go": "//go:build mytag && !windows\n\npackage plat\n\nfunc Custom() {}\n",
    "either.go": "// Comment above.\n\n// +build darwin freebsd\n// +build !cgo\n\npackage plat\n\nfunc BSDish() {}\n",
    "cgo.go": 'package plat\n\n// #include <stdio.h>\nimport "C"\n\nfunc WithCgo() {}\n',
    "unix.go": "//go:build unix\n\npackage plat\n\nfunc Unix() {}\n",
    "old_go.go": "//go:build go1.99\n\npackage plat\n\nfunc Future() {}\n",
    "_draft.go": "package plat\n\nfunc Draft() {}\n",
}
CONTEXTS = [
    GenerationSettings(),
    GenerationSettings(goos="darwin", goarch="arm64", cgo=False),
    GenerationSettings(goos="windows", build_tags=["mytag"]),
    GenerationSettings(goos="freebsd", goarch="386", build_tags=["mytag"], cgo=False),
]


@needs_go
@pytest.mark.parametrize("settings", CONTEXTS, ids=lambda s: f"{s.goos}-{s.goarch}-{s.build_tags}-cgo{s.cgo}")
def test_crafted_platform_files_are_indexed_as_go_build_sees_them(toolchain, tmp_path, settings):
    root = tmp_path / "plat"
    root.mkdir()
    for name, text in PLATFORM_REPO.items():
        (root / name).write_text(text)
    settings = settings.model_copy(update={"go_version": toolchain[1]})
    truth, truth_names = go_view(toolchain, root, "example.com/plat", settings)
    index, ours, names = our_view(root, "example.com/plat", settings, tmp_path / "cache")
    assert ours == truth and names == truth_names == {"example.com/plat": "plat"}
    symbols = {s.name: s for s in index.symbols}
    name_doc = {"linux": "Name returns linux.", "darwin": "Name returns darwin."}.get(settings.goos)
    assert (symbols["Name"].doc if "Name" in symbols else None) == name_doc  # the target's file, not the first
    assert symbols["Stat_t"].signature == "type Stat_t struct {\n\tSize int64\n}"  # never the ignored C version
    excluded = {line.split(": ", 1)[0] for line in index.excluded}
    assert {"a_gen.go", "b_old.go", "old_go.go", "_draft.go"} <= excluded
    assert excluded | {s.file for s in index.symbols} | {"go.mod"} == set(PLATFORM_REPO)  # every file accounted for


def test_symbols_record_the_constraint_they_were_compiled_under(tmp_path):
    root = tmp_path / "plat"
    root.mkdir()
    for name, text in PLATFORM_REPO.items():
        (root / name).write_text(text)
    index, _ = index_repo(root, GoSource(url=str(root)), "plat", GenerationSettings(), tmp_path / "cache")
    builds = {s.name: s.build for s in index.symbols}
    assert builds == {"Name": "linux", "Stat_t": "", "WithCgo": "", "Unix": "unix"}
    assert "b_old.go: build constraint: //go:build ignore is false for linux/amd64" in index.excluded
    assert "plat_darwin.go: build constraint: file name is for darwin, not linux/amd64" in index.excluded


@pytest.mark.parametrize(
    ("name", "tags"),
    [
        ("x_linux_amd64_test.go", ["linux", "amd64"]),
        ("x_linux.go", ["linux"]),
        ("x_arm64.go", ["arm64"]),
        ("linux.go", []),
        ("x_linux_foo.go", []),
        ("x_foo_linux.s.go", ["linux"]),
        ("x_test.go", []),
    ],
)
def test_file_name_suffixes(name, tags):
    assert file_name_tags(name) == tags


@pytest.mark.parametrize(
    ("source", "expression"),
    [
        (b"//go:build linux && !cgo\n\npackage x\n", "linux && !cgo"),
        (b"// +build linux,386 darwin\n// +build cgo\n\npackage x\n", "(linux && 386 || darwin) && cgo"),
        (b"// +build ignore\npackage x\n", None),  # no blank line before the package clause: not a constraint
        (b"/* a\n//go:build ignore\n*/\npackage x\n", None),
        (b"package x\n//go:build ignore\n", None),
    ],
)
def test_header_constraint_follows_go_build_placement_rules(source, expression):
    assert header_constraint(source) == expression


def test_build_expressions_evaluate_with_the_contexts_tags():
    tags = BuildContext("android", "arm64", cgo=False, go_version="1.21").satisfied()
    assert {"android", "linux", "unix", "arm64", "gc", "go1.1", "go1.21"} <= tags and "cgo" not in tags
    assert evaluate("linux && (arm64 || amd64) && !cgo && go1.21", tags)
    assert not evaluate("!unix || go1.22", tags)
    for bad in ("linux &&", "(linux", "linux || || x", "a b", "linux $"):
        with pytest.raises(BuildConstraintError):
            evaluate(bad, tags)
    with pytest.raises(BuildConstraintError, match="over 2000 characters"):
        evaluate("(" * 5000 + "x" + ")" * 5000, tags)


needs_packages = pytest.mark.skipif(
    not (GOCODE / "golang.org/x/sys").is_dir() or not (GOCODE / "golang.org/x/exp").is_dir(),
    reason="golang-golang-x-sys-dev / golang-golang-x-exp-dev missing: run `make go-sources`",
)
STDLIB = Path("/usr/lib/go/src")


SQLITE3 = GOCODE / "github.com/mattn/go-sqlite3"  # package sqlite3, all cgo


def real_packages() -> list[tuple[Path, str]]:
    found = [(GOCODE / "golang.org/x/sys", "golang.org/x/sys"), (GOCODE / "golang.org/x/exp", "golang.org/x/exp")]
    found += [(SQLITE3, "github.com/mattn/go-sqlite3")] if SQLITE3.is_dir() else []
    return found + [(STDLIB.resolve() / name, name) for name in ("os", "syscall", "net", "crypto", "go", "encoding")]


@needs_go
@needs_packages
@pytest.mark.parametrize("settings", [GenerationSettings(), GenerationSettings(goos="darwin", goarch="arm64")])
def test_real_packages_match_the_go_toolchain(toolchain, tmp_path, settings):
    settings = settings.model_copy(update={"go_version": toolchain[1]})
    totals = dict.fromkeys(KINDS, 0)
    for root, module in real_packages():
        truth, truth_names = go_view(toolchain, root, module, settings)
        _, ours, names = our_view(root, module, settings, tmp_path / "cache")
        assert names == truth_names, module
        for kind in KINDS:
            expected, got = {t for t in truth if t[1] == kind}, {o for o in ours if o[1] == kind}
            recall, precision = len(expected & got) / max(1, len(expected)), len(expected & got) / max(1, len(got))
            assert recall >= 0.99 and precision >= 0.99, (module, kind, recall, precision, sorted(expected ^ got)[:5])
            totals[kind] += len(expected)
    assert totals["const"] > 2000 and totals["method"] > 300 and totals["func"] > 500  # over a real API


PROMOTING = """package promo

type conn struct{ *buffer }

// Close closes the connection.
func (c *conn) Close() error { return nil }

// Name names it.
func (c conn) Name() string { return "" }

// Reset is declared twice at the same depth below Client: neither is shown.
func (c *conn) Reset() {}

type buffer struct{}

// Flush is two levels down: go/doc does not follow unexported types' own embeddings.
func (b *buffer) Flush() {}

type state struct{}

func (s state) Reset() {}

// Dial is shadowed by Client's own Dial.
func (s state) Dial() {}

func (s state) hidden() {}

// Exported is an exported embedded type: its methods are shown on it.
type Exported struct{}

// Ping pings.
func (Exported) Ping() {}

// Client talks to a server.
type Client struct {
	conn
	*state
	Exported
}

// Dial dials.
func (c *Client) Dial() {}

// Pool embeds a connection by pointer.
type Pool struct{ *conn }
"""


@needs_go
def test_promoted_methods_are_indexed_as_go_doc_shows_them(toolchain, tmp_path):
    root = tmp_path / "promo"
    root.mkdir()
    (root / "promo.go").write_text(PROMOTING)
    settings = GenerationSettings(go_version=toolchain[1])
    truth, _ = go_view(toolchain, root, "example.com/promo", settings)
    index, ours, _ = our_view(root, "example.com/promo", settings, tmp_path / "cache")
    assert ours == truth
    methods = {s.name: s for s in index.symbols if s.kind == "method"}
    assert sorted(methods) == [
        *("Client.Close", "Client.Dial", "Client.Name", "Exported.Ping"),
        *("Pool.Close", "Pool.Name", "Pool.Reset"),  # Pool embeds only conn: its Reset conflicts with nothing
    ]
    assert methods["Client.Close"].signature == "func (c *Client) Close() error"  # receiver as go/doc rewrites it
    assert methods["Pool.Close"].signature == "func (c Pool) Close() error"  # embedded by pointer: no star
    assert (methods["Client.Name"].doc, methods["Client.Name"].line) == ("Name names it.", 9)


@pytest.mark.skipif(not SQLITE3.is_dir(), reason="golang-github-mattn-go-sqlite3-dev missing: run `make go-sources`")
def test_grounding_on_go_sqlite3_checks_names_under_its_package_name(tmp_path):
    module = "github.com/mattn/go-sqlite3"
    index, _ = index_repo(
        SQLITE3, GoSource(url=str(SQLITE3), import_path=module), "sqlite3", GenerationSettings(), tmp_path
    )
    assert index.packages[module]["name"] == "sqlite3"
    grounding = SymbolIndex(symbol.to_json() for symbol in index.symbols)
    answer = "Register `sqlite3.SQLiteDriver`, call `sqlite3.Version()`, then the invented `sqlite3.OpenFast`."
    assert grounding.mentions(answer) == [
        ("sqlite3.SQLiteDriver", True),
        ("sqlite3.Version", True),
        ("sqlite3.OpenFast", False),
    ]
