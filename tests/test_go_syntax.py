"""Valid Go the parser stumbles on, and invalid Go in the middle of a file: a syntax error costs the declaration it is
in, never the file, and the error names the true line (the Go toolchain's own parser's, where Go is installed)."""

from __future__ import annotations

import shutil

import pytest

from trainer.data_config import GenerationSettings, GoSource
from trainer.go.parser import parse_go_file
from trainer.go.repo import index_repo

needs_go = pytest.mark.skipif(shutil.which("gofmt") is None, reason="no Go toolchain: run `make go-sources`")

ONE_LINE_GROUPS = b"""package x

import "fmt"

// F prints.
func F() { fmt.Println() }

const ( A = iota; B; C )

var ( D = 1; E = "e" )

// G is after the groups.
func G() {}
"""


def test_one_line_groups_are_read_whole():
    parsed = parse_go_file(ONE_LINE_GROUPS, "x.go", "example.com/x", test_file=False)
    assert [(s.name, s.line) for s in parsed.symbols] == [
        ("F", 6),
        ("A", 8),
        ("B", 8),
        ("C", 8),
        ("D", 10),
        ("E", 10),
        ("G", 13),
    ]
    assert parsed.unreadable == []


BROKEN_MIDDLE = """package x

// Before is kept.
func Before() {}

var Ok\u2e2f = 1

func Broken( {
}

// After is kept too.
type After struct{}
"""


@needs_go
def test_a_syntax_error_costs_its_declaration_and_go_names_the_line(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    (root / "broken.go").write_text(BROKEN_MIDDLE)
    (root / "valid.go").write_text("package x\n\nvar Fine\u2e2f = 1\n\n// Also is kept.\nfunc Also() {}\n")
    index, _ = index_repo(root, GoSource(url=str(root)), "x", GenerationSettings(), tmp_path / "cache")
    assert sorted(s.name for s in index.symbols) == ["After", "Also", "Before"]
    assert index.skipped == [
        "broken.go: syntax error at line 8:14 (go/parser: expected ')', found '{'); "
        "2 declaration(s) at line(s) 6, 8 not indexed, the rest kept",
        # U+2E2F is a letter to Go (category Lm) but not an identifier character to tree-sitter (Pattern_Syntax).
        "valid.go: valid Go that tree-sitter cannot read; 1 declaration(s) at line(s) 3 not indexed, the rest kept",
    ]


def test_the_parser_alone_keeps_the_rest_and_names_each_unreadable_declarations_line():
    parsed = parse_go_file(BROKEN_MIDDLE.encode(), "x.go", "example.com/x", test_file=False)
    assert parsed.unreadable == [6, 8] and [s.name for s in parsed.symbols] == ["Before", "After"]


def test_an_error_deep_in_a_large_file_costs_one_declaration():
    body = "".join(f"// F{n} is {n}.\nfunc F{n}() {{}}\n\n" for n in range(2000))
    source = f"package x\n\n{body}func Broken( {{\n}}\n\n{body.replace('func F', 'func G')}"
    parsed = parse_go_file(source.encode(), "x.go", "example.com/x", test_file=False)
    assert parsed.unreadable == [3 + 3 * 2000]
    assert len(parsed.symbols) >= 3999  # all F…, and all G… but the one the broken brace swallows
