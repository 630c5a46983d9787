"""Go API extraction: the parser on hand-made files, the repository walk, the cache, and gin against go/doc."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import set_args
from trainer.data_config import GenerationSettings, GoSource
from trainer.go.parser import GoSyntaxError, parse_go_file
from trainer.go.repo import index_repo, matches

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from synthesis_memory import REPORT_PEAK_RSS

GIN = Path("/usr/share/gocode/src/github.com/gin-gonic/gin")
APIDUMP = Path(__file__).parent / "go" / "apidump.go"

LIBRARY = b"""// Package shop sells things.
//
//go:build linux
package shop

// Store keeps items.
//
// It is safe for concurrent use.
type Store[T any] struct {
	// Name is shown to users.
	Name  string `json:"name"`
	A, b  int
	io.Reader
	*lock
	hidden int
}

// Get returns an item.
func (s *Store[T]) Get(key string) (T, error) { var zero T; return zero, nil }

func (s *Store[T]) put() {}

func (l lock) Unlock() {}

// New builds a Store.
func New[T any](name string, opts ...Option) *Store[T] {
	return &Store[T]{Name: name}
}

type (
	// Option configures a Store.
	Option func(*Store[any])
	// Finder finds.
	Finder interface {
		io.Closer
		// Find looks up one key.
		Find(key string) bool
		find()
	}
	secret int
)

// Sizes of a store.
const (
	// Small is small.
	Small, Large = 1, 100
	tiny         = 0
)

// Default is the default store.
var Default = New[int]("default")
"""

EXAMPLES = b"""package shop_test

// This shows New.
func ExampleNew() {
	s := shop.New[int]("x")
	fmt.Println(s.Name)
	// Output:
	// x
}

func ExampleStore_Get_missing() {
	fmt.Println("nothing")
}

func Example() {}

func Examples() {}

func TestNotAnExample(t *testing.T) {}
"""


def by_name(symbols):
    return {symbol.name: symbol for symbol in symbols}


def test_parser_extracts_exported_api_with_docs_signatures_and_lines():
    parsed = parse_go_file(LIBRARY, "shop.go", "example.com/shop", test_file=False)
    assert parsed.package_name == "shop"
    assert parsed.package_doc == "Package shop sells things."  # the //go:build directive is not documentation
    symbols = by_name(parsed.symbols)
    assert sorted(symbols) == ["Default", "Finder", "Large", "New", "Option", "Small", "Store", "Store.Get"]
    store = symbols["Store"]
    assert (store.kind, store.line, store.file) == ("type", 9, "shop.go")
    assert store.doc == "Store keeps items.\n\nIt is safe for concurrent use."
    assert store.signature == (
        'type Store[T any] struct {\n\tName string `json:"name"`\n\tA int\n\tio.Reader\n'
        "\t// contains filtered or unexported fields\n}"
    )
    assert [member["name"] for member in store.members] == ["Name", "A", "Reader"]
    assert store.members[0]["doc"] == "Name is shown to users."
    get = symbols["Store.Get"]
    assert (get.kind, get.signature, get.doc) == (
        "method",
        "func (s *Store[T]) Get(key string) (T, error)",
        "Get returns an item.",
    )
    assert symbols["New"].signature == "func New[T any](name string, opts ...Option) *Store[T]"
    assert symbols["Option"].doc == "Option configures a Store."  # a grouped spec's own comment
    finder = symbols["Finder"]
    assert [member["name"] for member in finder.members] == ["Find"]
    assert finder.signature.endswith("\t// contains filtered or unexported methods\n}")
    assert symbols["Small"].doc == "Small is small." and symbols["Large"].signature == "const Small, Large = 1, 100"
    assert (symbols["Default"].kind, symbols["Default"].doc) == ("var", "Default is the default store.")


def test_examples_come_from_test_files_with_their_output_and_target():
    parsed = parse_go_file(EXAMPLES, "shop_test.go", "example.com/shop", test_file=True)
    assert parsed.symbols == []
    examples = {example.name: example for example in parsed.examples}
    assert sorted(examples) == ["Example", "ExampleNew", "ExampleStore_Get_missing"]
    new = examples["ExampleNew"]
    assert (new.target, new.output, new.doc, new.line) == ("New", "x", "This shows New.", 4)
    assert new.code == 's := shop.New[int]("x")\nfmt.Println(s.Name)'
    assert examples["ExampleStore_Get_missing"].target == "Store.Get"
    assert examples["ExampleStore_Get_missing"].output is None
    assert examples["Example"].target == ""


def test_a_file_that_does_not_parse_names_the_line():
    parsed = parse_go_file(b"package x\n\nfunc Broken( {\n", "x.go", "x", test_file=False)
    assert (parsed.symbols, parsed.unreadable) == ([], [3])
    with pytest.raises(GoSyntaxError, match="near line 1"):
        parse_go_file(b"packag x\n\nfunc F() {}\n", "x.go", "x", test_file=False)


@pytest.mark.parametrize(
    ("path", "patterns", "expected"),
    [
        ("a/b/c.go", ["**/*.go"], True),
        ("c.go", ["**/*.go"], True),
        ("README.md", ["*.md"], True),
        ("docs/x/y.md", ["*.md"], False),
        ("docs/x/y.md", ["docs/**/*.md"], True),
        ("a/b_test.go", ["a/*_test.go"], True),
        ("a/c/b_test.go", ["a/*_test.go"], False),
    ],
)
def test_include_exclude_globs(path, patterns, expected):
    assert matches(path, patterns) is expected


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    (root / "go.mod").write_text("module example.com/shop\n\ngo 1.21\n")
    (root / "shop.go").write_bytes(LIBRARY)
    (root / "shop_test.go").write_bytes(EXAMPLES)
    (root / "sub" / "doc.go").write_text("// Package sub helps.\npackage sub\n")
    (root / "sub" / "sub.go").write_text("// Not the doc.\npackage sub\n\n// Help helps.\nfunc Help() {}\n")
    for folder in ("internal", "vendor/x", "testdata"):
        (root / folder).mkdir(parents=True)
        (root / folder / "hid.go").write_text("package hid\n\nfunc Hidden() {}\n")
    (root / "cmd").mkdir()
    (root / "cmd" / "main.go").write_text("package main\n\nfunc Exported() {}\n")
    (root / "broken.go").write_text("package shop\n\nfunc Broken( {\n")
    (root / "blob.go").write_bytes(b"package shop\x00\x01")
    (root / "latin1.go").write_bytes(b"package shop\n// caf\xe9\n")
    (root / "huge.go").write_text("package shop\n" + "// padding\n" * 20000)
    outside = tmp_path / "outside.go"
    outside.write_text("package evil\n\nfunc Leak() {}\n")
    (root / "link.go").symlink_to(outside)
    (root / "README.md").write_text('# Shop\n\nIntro to the shop.\n\n## Usage\n\n```go\ns := shop.New[int]("a")\n```\n')
    return root


def test_repo_walk_reports_every_skipped_file_and_applies_the_folder_policy(repo, tmp_path):
    settings = GenerationSettings(max_file_bytes=100_000)
    index, cached = index_repo(repo, GoSource(url=str(repo)), "shop", settings, tmp_path / "cache")
    assert cached is False
    assert index.import_path == "example.com/shop"
    assert sorted({s.package for s in index.symbols}) == ["example.com/shop", "example.com/shop/sub"]
    assert "Exported" not in {s.name for s in index.symbols}  # package main is a command, not an API
    assert index.packages["example.com/shop/sub"] == {"name": "sub", "doc": "Package sub helps."}  # doc.go wins
    skipped = dict(line.split(": ", 1) for line in index.skipped)
    assert skipped.pop("broken.go").endswith("1 declaration(s) at line(s) 3 not indexed, the rest kept")
    assert skipped == {
        "internal": "internal/ excluded (data.generation.include_internal)",
        "testdata": "testdata/ excluded (data.generation.include_testdata)",
        "vendor": "vendor/ excluded (data.generation.include_vendor)",
        "link.go": "symlink pointing outside the repository",
        "blob.go": "binary file",
        "huge.go": f"{(repo / 'huge.go').stat().st_size} bytes, over data.generation.max_file_bytes (100000)",
        "latin1.go": "not valid UTF-8 (byte 19)",
    }
    assert [e.name for e in index.examples] == ["ExampleNew", "ExampleStore_Get_missing", "Example"]
    assert [(s.title, s.code) for s in index.sections] == [
        ("Shop", []),
        ("Shop > Usage", ['s := shop.New[int]("a")']),
    ]
    with_internal = GenerationSettings(include_internal=True, include_vendor=True)
    index, _ = index_repo(repo, GoSource(url=str(repo), exclude=["sub/**"]), "shop", with_internal, tmp_path / "c2")
    packages = {s.package for s in index.symbols}
    assert {"example.com/shop/internal", "example.com/shop/vendor/x"} <= packages
    assert "example.com/shop/sub" not in packages


def test_second_run_is_served_from_the_cache_until_a_file_changes(repo, tmp_path):
    source, settings, cache = GoSource(url=str(repo)), GenerationSettings(), tmp_path / "cache"
    first, cached_first = index_repo(repo, source, "shop", settings, cache)
    second, cached_second = index_repo(repo, source, "shop", settings, cache)
    assert (cached_first, cached_second) == (False, True)
    assert second.to_json() == first.to_json()
    (repo / "sub" / "more.go").write_text("package sub\n\n// More is new.\nfunc More() {}\n")
    third, cached_third = index_repo(repo, source, "shop", settings, cache)
    assert cached_third is False
    assert "More" in {s.name for s in third.symbols}


needs_gin = pytest.mark.skipif(not GIN.is_dir(), reason="gin's Debian package is missing: run `make go-sources`")


@needs_gin
@pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain: run `make go-sources`")
def test_gin_api_matches_go_doc(tmp_path):
    env = {**os.environ, "GOCACHE": str(tmp_path / "gocache"), "GO111MODULE": "off", "GOFLAGS": ""}
    dump = subprocess.run(
        ["go", "run", str(APIDUMP), "-cgo", "-promoted", str(GIN), "github.com/gin-gonic/gin"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp_path,
    )
    truth = {tuple(line.split("\t")) for line in dump.stdout.splitlines() if "\tpackage\t" not in line}
    index, _ = index_repo(GIN, GoSource(url=str(GIN)), "gin", GenerationSettings(), tmp_path / "cache")
    ours = {(s.package, s.kind, s.name) for s in index.symbols}
    assert index.files >= 80 and not [line for line in index.skipped if "syntax" in line]
    scores = {}
    for kind in ("func", "method", "type", "const", "var"):
        expected, got = {t for t in truth if t[1] == kind}, {o for o in ours if o[1] == kind}
        scores[kind] = (len(expected & got) / len(expected), len(expected & got) / len(got))
    print(json.dumps(scores))
    assert len({t for t in truth if t[1] == "method"}) > 150  # the comparison is over gin's real API
    for kind, (recall, precision) in scores.items():  # docs/synthesis.md: 1.00 for all five kinds
        assert recall >= 0.99 and precision >= 0.99, (kind, recall, precision)


GOCODE = Path("/usr/share/gocode/src")
PEAK_RSS_LIMIT = 640 * 2**20


@pytest.mark.slow
@pytest.mark.skipif(not GIN.is_dir(), reason="gin's Debian package is missing: run `make go-sources`")
def test_all_of_debians_go_sources_synthesize_in_bounded_memory(tmp_path):
    """Every package under /usr/share/gocode/src (gin, chi and their dependencies: ~4,000 files, ~100 MB) as one
    source. Files are read and parsed one at a time; what stays in memory is the extracted index."""
    sets = [f"data.output_dir={tmp_path / 'out'}", f"data.cache_dir={tmp_path / 'cache'}", "data.sources=[]"]
    args = [sys.executable, "-c", REPORT_PEAK_RSS, "synthesize", "--source", str(GOCODE)]
    args += set_args(sets)
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    source_bytes = sum(p.stat().st_size for p in GOCODE.rglob("*.go") if p.is_file() and not p.is_symlink())
    files, symbols = (int(n) for n in output.split("  source src: ")[1].split(" symbols")[0].split(" files, "))
    peak = int(output.rsplit("peak_rss_kib=", 1)[1]) * 1024
    print(f"{files} files, {source_bytes / 2**20:.0f} MiB of Go, {symbols} symbols: peak RSS {peak / 2**20:.0f} MiB")
    assert files > 1000 and symbols > 10000 and manifest["generated"]["count"] > 10000
    assert peak < PEAK_RSS_LIMIT
