"""The compile check of teacher-written Go (trainer/go/check.py) with the real toolchain on Debian's chi and gin."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.helpers import CHI
from trainer.errors import TrainerError
from trainer.go import modules
from trainer.go.check import CheckTarget, check_snippets
from trainer.go.fragments import prepare

GIN = Path("/usr/share/gocode/src/github.com/gin-gonic/gin")
CHI_TARGET = CheckTarget("github.com/go-chi/chi/v5", CHI)
needs_go = pytest.mark.skipif(
    shutil.which("go") is None or not CHI.is_dir(), reason="no Go toolchain or Debian's chi: run `make go-sources`"
)


CHI_PROGRAM = """package main

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

func main() {
	r := chi.NewRouter()
	r.Get("/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("hi")) })
	http.ListenAndServe(":3000", r)
}
"""
STATEMENTS = """r := chi.NewRouter()
r.Use(middleware.Logger)
r.Get("/users/{id}", func(w http.ResponseWriter, req *http.Request) {
	fmt.Fprintln(w, chi.URLParam(req, "id"))
})
"""
DECLARATIONS = """// user answers GET /users/{id}.
func user(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "user %s", chi.URLParam(r, "id"))
}
"""
AMBIGUOUS = "n := rand.Intn(6)\nfmt.Println(n)\n"
UNKNOWN_MODULE = 'package main\n\nimport "github.com/nowhere/nothing"\n\nfunc main() { nothing.Do() }\n'
CHI_BATCH = [
    CHI_PROGRAM,
    CHI_PROGRAM.replace("chi.NewRouter()", "chi.NewRuoter()"),  # 1: misspelt framework function
    CHI_PROGRAM.replace('w.Write([]byte("hi"))', 'w.Write("hi")'),  # 2: type error
    STATEMENTS,
    DECLARATIONS,
    AMBIGUOUS,  # 5
    UNKNOWN_MODULE,  # 6
    "r := chi.NewRouter()\nif r != nil {\n\tunused := 1\n}\n",  # 7: a real unused variable
    'fmt.Printf("%d\\n", "seven")\n',  # 8: vet finding
    CHI_PROGRAM.replace('"hi"', '"hello"'),
]
FAILING = {1, 2, 5, 6, 7, 8}


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    """One cache folder for the module's chi and gin checks: gin reuses the standard library chi's run compiled."""
    return tmp_path_factory.mktemp("go-check")


@pytest.fixture(scope="module")
def chi_run(work_dir):
    """One batch over CHI_BATCH with a cold build cache, timed: (results, seconds, work_dir). Its first user is slow:
    it compiles net/http and chi (5-10 s on 2 cores)."""
    start = time.perf_counter()
    results = check_snippets(CHI_BATCH, CHI_TARGET, work_dir)
    return results, time.perf_counter() - start, work_dir


@pytest.mark.slow
@needs_go
def test_one_result_per_snippet_and_only_the_broken_ones_fail(chi_run):
    results, _, _ = chi_run
    assert len(results) == len(CHI_BATCH)
    assert {i for i, r in enumerate(results) if not r.ok} == FAILING
    assert all(r.message == "" for r in results if r.ok)


@pytest.mark.slow
@needs_go
def test_a_misspelt_function_fails_with_the_compilers_line_at_the_snippets_position(chi_run):
    results, _, _ = chi_run
    assert results[1].message == "snippet.go:10:11: undefined: chi.NewRuoter"
    assert results[2].message.startswith('snippet.go:11:68: cannot use "hi" (untyped string constant) as []byte')


@pytest.mark.slow
@needs_go
def test_fragments_get_positions_of_the_lines_the_teacher_wrote(chi_run):
    results, _, _ = chi_run
    assert results[7].message == "snippet.go:3:2: unused declared but not used"
    assert results[8].message == 'snippet.go:1:1: fmt.Printf format %d has arg "seven" of wrong type string'


@pytest.mark.slow
@needs_go
def test_an_ambiguous_or_unimportable_fragment_is_refused_with_its_reason(chi_run):
    results, _, _ = chi_run
    assert results[5].message == (
        "fragment uses `rand`, which could be crypto/rand or math/rand: write a complete file with its imports"
    )
    assert "cannot find module providing package github.com/nowhere/nothing" in results[6].message
    assert "GOPROXY=off" in results[6].message and results[6].message.startswith("snippet.go:3:8: ")


@pytest.mark.slow
@needs_go
def test_a_rerun_reuses_the_mirrors_and_the_build_cache(chi_run):
    results, first_seconds, work_dir = chi_run
    mirrors = {p: p.stat().st_mtime_ns for p in (work_dir / "modules").iterdir()}
    start = time.perf_counter()
    again = check_snippets(CHI_BATCH, CHI_TARGET, work_dir)
    seconds = time.perf_counter() - start
    assert again == results
    assert {p: p.stat().st_mtime_ns for p in (work_dir / "modules").iterdir()} == mirrors
    assert seconds < first_seconds / 2, (seconds, first_seconds)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("go") is None or not GIN.is_dir(), reason="no Go toolchain or Debian's gin")
def test_gin_and_its_dependencies_resolve_offline_from_debians_folders(work_dir):
    program = 'package main\n\nimport "github.com/gin-gonic/gin"\n\nfunc main() {\n\tr := gin.Default()\n'
    program += '\tr.GET("/ping", func(c *gin.Context) { c.JSON(200, gin.H{"message": "pong"}) })\n\tr.Run()\n}\n'
    fragment = 'r := gin.New()\nr.Use(gin.Recovery())\nr.POST("/x", func(c *gin.Context) { c.String(201, "ok") })\n'
    target = CheckTarget("github.com/gin-gonic/gin", GIN)
    snippets = [program, program.replace("gin.Default()", "gin.Defualt()"), fragment]
    results = check_snippets(snippets, target, work_dir)
    assert [r.ok for r in results] == [True, False, True], results
    assert results[1].message == "snippet.go:6:11: undefined: gin.Defualt"


def _framework(tmp_path: Path, name: str, go_mod: str, declaration: str) -> CheckTarget:
    """A one-file module `example.com/NAME` in tmp_path: `package NAME` holding `declaration`."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "go.mod").write_text(go_mod)
    (folder / f"{name}.go").write_text(f"package {name}\n\n{declaration}\n")
    return CheckTarget(f"example.com/{name}", folder)


@needs_go
def test_a_framework_whose_go_line_is_newer_than_the_toolchain_still_compiles(tmp_path):
    go_mod = "module example.com/greet\n\ngo 1.99.1\n\ntoolchain go1.99.1\n"
    target = _framework(tmp_path, "greet", go_mod, 'func Hello() string { return "hello" }')
    results = check_snippets(["s := greet.Hello()\n", "greet.Bye()\n"], target, tmp_path / "work")
    assert [r.ok for r in results] == [True, False]
    assert results[1].message == "snippet.go:1:7: undefined: greet.Bye"


@needs_go
def test_a_framework_that_does_not_build_is_an_error_not_a_failed_snippet(tmp_path):
    go_mod, declaration = "module example.com/broken\n\ngo 1.18\n", 'func Hello() int { return "hello" }'
    target = _framework(tmp_path, "broken", go_mod, declaration)
    with pytest.raises(TrainerError, match=r"(?s)# example.com/broken.*broken.go:3:27: cannot use \"hello\""):
        check_snippets(["broken.Hello()\n"], target, tmp_path / "work")


def test_a_missing_go_is_one_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    modules.toolchain.cache_clear()
    try:
        with pytest.raises(TrainerError, match="`go` is not on PATH"):
            check_snippets(["x := 1\n"], CHI_TARGET, tmp_path / "work")
    finally:
        modules.toolchain.cache_clear()


NAMES = {"chi": ["github.com/go-chi/chi/v5"], "fmt": ["fmt"], "http": ["net/http"]}


def test_a_statement_fragment_is_wrapped_keeping_its_lines_and_columns():
    prepared = prepare("r := chi.NewRouter() // the router\nfmt.Println(len(r.Routes()))\n", NAMES, "chi")
    lines = prepared.source.splitlines()
    assert lines[: prepared.header_lines] == [
        "package snippet",
        'import "github.com/go-chi/chi/v5"',
        'import "fmt"',
        "func main() {",
    ]
    assert lines[prepared.header_lines] == "r := chi.NewRouter(); _ = r // the router"
    assert lines[-1] == "}"


def test_declarations_are_wrapped_as_a_package_and_a_locally_declared_name_gets_no_import():
    prepared = prepare("type chi struct{}\n\nfunc (c chi) Hello(w http.ResponseWriter) {}\n", NAMES, "chi")
    assert prepared.source.splitlines()[: prepared.header_lines] == ["package snippet", 'import "net/http"']
    assert prepared.source.endswith("func (c chi) Hello(w http.ResponseWriter) {}\n")


def test_hostile_nesting_in_a_teachers_block_is_wrapped_not_a_recursion_error():
    chain = prepare("r := chi.NewRouter()\nx := r" + ".With()" * 600 + "\n", NAMES, "chi")  # 600 calls deep
    assert chain.problem == "" and chain.source.count(".With()") == 600
    nested = prepare("x := " + "(" * 1200 + "1" + ")" * 1200 + "\n", NAMES, "chi")
    assert nested.problem == "" and "_ = x" in nested.source


def test_a_complete_file_is_kept_and_package_main_compiles_as_a_library():
    prepared = prepare(CHI_PROGRAM, NAMES, "chi")
    assert prepared.header_lines == 0 and prepared.source == CHI_PROGRAM.replace("package main", "package main_", 1)
    library = "package chi_test\n\nfunc helper() {}\n"
    assert prepare(library, NAMES, "chi").source == library


def test_go_mod_requirements_and_placeholder_versions():
    go_mod = (
        "module x\n\ngo 1.21.0\n\nrequire a.com/one v1.2.3 // indirect\n\nrequire (\n"
        "\tb.com/two/v5 v5.0.1\n\t// c.com/commented v1.0.0\n\tgopkg.in/yaml.v3 v3.0.1 // indirect\n)\n"
    )
    assert modules.requirements(go_mod) == [
        ("a.com/one", "v1.2.3"),
        ("b.com/two/v5", "v5.0.1"),
        ("gopkg.in/yaml.v3", "v3.0.1"),
    ]
    assert [modules.placeholder_version(p) for p in ("a.com/one", "b.com/two/v5", "gopkg.in/yaml.v3")] == [
        "v0.0.0",
        "v5.0.0",
        "v3.0.0",
    ]


def test_a_mirror_leaves_out_a_subfolder_that_is_another_module_of_the_build(tmp_path):
    outer = tmp_path / "src" / "example.com" / "outer"
    (outer / "codec").mkdir(parents=True)
    (outer / "go.mod").write_text("module example.com/outer\n\ngo 1.11\n")
    (outer / "outer.go").write_text("package outer\n")
    (outer / "codec" / "codec.go").write_text("package codec\n")
    module = modules.Module("example.com/outer", outer, "1.11")
    mirror = modules.mirror(module, tmp_path / "work", {outer / "codec"})
    assert sorted(p.name for p in mirror.iterdir()) == ["go.mod", "outer.go"]
    assert (mirror / "go.mod").read_text() == "module example.com/outer\n\ngo 1.11\n"
    assert (mirror / "outer.go").resolve() == outer / "outer.go"
    assert modules.mirror(module, tmp_path / "work", {outer / "codec"}) == mirror


@needs_go
def test_a_major_version_module_is_found_where_debian_keeps_it_without_the_suffix():
    tools = modules.toolchain()
    assert modules.find_module("github.com/go-chi/chi/v5", "v5.0.8", tools) == CHI
    assert modules.find_module("github.com/go-chi/chi/v7", "v7.0.0", tools) is None
