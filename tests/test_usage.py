"""The new fact kinds: usage from the framework's own code (trimmed, qualified, with provenance), facts stated
several ways and in both directions, invented names; and today's mix, reproduced exactly by its settings."""

from collections import Counter
from dataclasses import asdict
from pathlib import Path

import pytest

from trainer.api_index import SymbolIndex
from trainer.data_config import GenerationMix, GenerationSettings, GoSource
from trainer.go.parser import Symbol
from trainer.go.repo import index_repo
from trainer.go.usage import read_usage
from trainer.synthesis.facts import Job, asked_by, details, inventions, job, misplaced, neighbours
from trainer.synthesis.generate import generate

ROUTE = """// Package route matches paths:
//
//	r := route.NewRouter()
//	r.HandleFunc("/", nil)
package route

import "net/http"

// Router matches request paths to handlers.
type Router struct {
	// Prefix is prepended to every pattern.
	Prefix string
}

// NewRouter returns an empty router with no routes.
func NewRouter() *Router { return &Router{} }

// Handle registers a handler for the pattern given. Use HandleFunc for a plain function.
func (r *Router) Handle(pattern string, h http.Handler) {}

// HandleFunc registers a handler function for the pattern given.
func (r *Router) HandleFunc(pattern string, f http.HandlerFunc) {}

// Param returns the path parameter named key from the request.
func Param(req *http.Request, key string) string { return "" }

// Logger is a middleware that logs each request to stderr.
func Logger(next http.Handler) http.Handler { return next }

// DefaultPrefix is the prefix every new router starts with.
var DefaultPrefix = ""
"""
INTERNAL_TEST = """package route

import "testing"

func TestHandle(t *testing.T) {
	r := NewRouter()
	if r.Prefix != "" {
		t.Fatal("prefix")
	}
	r.Handle("/users/{id}", Logger(nil))
}
"""
EXAMPLE_PROGRAM = """package main

import (
	"fmt"
	"net/http"

	"example.com/route"
)

func main() {
	fmt.Println("starting")
	http.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		fmt.Println("serving")
		// The id from the path.
		id := route.Param(req, "id")
		w.Write([]byte(id))
	})
}
"""


@pytest.fixture
def route_repo(tmp_path) -> Path:
    root = tmp_path / "route"
    (root / "_examples" / "hello").mkdir(parents=True)
    (root / "go.mod").write_text("module example.com/route\n")
    (root / "route.go").write_text(ROUTE)
    (root / "route_test.go").write_text(INTERNAL_TEST)
    (root / "_examples" / "hello" / "main.go").write_text(EXAMPLE_PROGRAM)
    return root


def test_uses_are_trimmed_qualified_and_keep_their_provenance(route_repo, tmp_path):
    settings = GenerationSettings()
    index, _ = index_repo(route_repo, GoSource(url=str(route_repo)), "route", settings, tmp_path / "cache")
    assert len(index.symbols) == 7  # the hidden _examples/ folder stays out of the API index
    found = read_usage(route_repo, index, index.short_names(), settings)
    uses = {(s.key.removeprefix("example.com/route."), s.file): s for s in found.snippets}
    param = uses["Param", "_examples/hello/main.go"]
    assert (param.line, param.origin) == (15, "example program")
    assert param.code == (  # the handler keeps what reads `id`; `fmt.Println` lines go
        'http.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {\n'
        "\t// The id from the path.\n"
        '\tid := route.Param(req, "id")\n'
        "\tw.Write([]byte(id))\n"
        "})"
    )
    # An internal test's names are qualified; `r.Handle` is a Router method through NewRouter's result type.
    handle = uses["Router.Handle", "route_test.go"]
    assert handle.code == 'r := route.NewRouter()\nr.Handle("/users/{id}", route.Logger(nil))'
    assert uses["NewRouter", "route_test.go"].code == handle.code  # with the first statement reading `r`
    assert uses["Logger", "route_test.go"].origin == "test"
    assert found.files == 2
    doc = uses["Router.HandleFunc", "example.com/route"]  # the package doc's code block
    assert (doc.origin, doc.code) == ("doc comment", 'r := route.NewRouter()\nr.HandleFunc("/", nil)')


def test_a_job_is_read_from_the_doc_and_inventions_are_names_the_framework_lacks():
    def symbol(name, doc, kind="func"):
        return Symbol("example.com/route", name, kind, f"func {name}()", doc, "route.go", 1)

    logger = symbol("Logger", "Logger is a middleware that logs each request to stderr.")
    assert job(logger).base == "log each request to stderr"
    assert job(logger).third == "logs each request to stderr"
    param = symbol("Param", "Param returns the path parameter named key.")
    assert job(param).base == "get the path parameter named key"
    assert job(symbol("Compress", "Compress compresses response bodies.")).base == "compress response bodies"
    assert job(symbol("Mux", "Mux is a router.", "type")) is None  # too short to describe it
    params = symbol("RouteParams", "RouteParams is a structure to track URL routing parameters efficiently.", "type")
    assert job(params) == Job(None, "is a structure to track URL routing parameters efficiently")  # what it is
    clean = job(symbol("CleanPath", "CleanPath is a middleware that will clean out double slash mistakes."))
    assert (clean.base, clean.third) == ("clean out double slash mistakes", "cleans out double slash mistakes")
    redirect = job(symbol("RedirectSlashes", "RedirectSlashes is a middleware that will match request paths."))
    assert redirect.third == "matches request paths"  # not "matchs"
    assert job(symbol("X", "Something else entirely here.")) is None  # the doc does not start with the name
    # what it is said between its name and its job
    maybe = job(symbol("Maybe", "Maybe middleware will allow you to change the flow of the stack."))
    assert (maybe.base, maybe.third) == (
        "allow you to change the flow of the stack",
        "allows you to change the flow of the stack",
    )
    chain = job(symbol("Middlewares", "Middlewares type is a slice of standard middleware handlers.", "type"))
    assert chain == Job(None, "is a slice of standard middleware handlers")
    assert job(symbol("Routes", "Routes interface adds two methods for router traversal.", "type")).base == (
        "add two methods for router traversal"
    )
    # docs that say it other ways: past an adverb (the verb as written), "can be used to", the name as the verb,
    # "is called by", what it is useful for
    head = job(symbol("GetHead", "GetHead automatically route undefined HEAD requests to GET handlers."))
    assert head == Job("automatically route undefined HEAD requests to GET handlers",
                       "automatically routes undefined HEAD requests to GET handlers")  # fmt: skip
    assert job(symbol("Match", "Match only works on GET requests.")) is None  # a short adverb is not read past
    encoder = job(symbol("SetEncoder", "SetEncoder can be used to set the implementation of an algorithm.", "method"))
    assert encoder == Job(
        "set the implementation of an algorithm", "can be used to set the implementation of an algorithm"
    )
    reset = symbol("Reset", "Reset a routing context to its initial state.", "method")
    assert job(reset) == Job(
        "reset a routing context to its initial state", "resets a routing context to its initial state"
    )
    # the reverse_lookup probe asks by the doc's words after the name, the name kept where it is the doc's verb
    assert asked_by(reset) == "resets a routing context to its initial state"
    assert asked_by(symbol("CleanPath", "CleanPath middleware will clean out double slash mistakes.")) == (
        "will clean out double slash mistakes"
    )
    logs = job(symbol("DefaultLogger", "DefaultLogger is called by the Logger middleware to log each request.", "var"))
    assert logs == Job(None, "is called by the Logger middleware to log each request")
    beat = job(symbol("Heartbeat", "Heartbeat endpoint middleware useful to setting up a path like `/ping`."))
    assert beat == Job(None, "is useful to setting up a path like `/ping`")
    assert inventions(param, job(param), {"Param", "GetParam"}) == [
        "GetPathParameter", "Params", "ParamHandler", "ParamMiddleware", "NewParam", "ParamFunc",
    ]  # fmt: skip
    # its own name misplaced: in the largest other package, a method as a func, a func on the type it returns
    packages = {"route": {"Router", "Router.HandleFunc", "NewRouter", "Param"}, "mw": {"Logger"}, "x": set()}
    handle_func = Symbol("example.com/route", "Router.HandleFunc", "method", "", "", "route.go", 1)
    assert misplaced(handle_func, "route", packages, None) == [("mw", "HandleFunc"), ("route", "HandleFunc")]
    new_router = Symbol("example.com/route", "NewRouter", "func", "func NewRouter() *Router", "", "route.go", 1)
    assert misplaced(new_router, "route", packages, "Router") == [("mw", "NewRouter"), ("route", "Router.NewRouter")]
    assert misplaced(logger, "mw", packages | {"route": {"Logger"}}, None) == []  # route has a Logger of its own
    handle = Symbol("p", "Router.Handle", "method", "", "Handle registers it. Use HandleFunc for a function.", "", 1)
    others = {"Router.HandleFunc": Symbol("p", "Router.HandleFunc", "method", "", "HandleFunc registers.", "", 2)}
    assert [(s.name, said) for s, said in neighbours(handle, others)] == [
        ("Router.HandleFunc", "Use HandleFunc for a function.")
    ]
    # the doc's later sentences, the symbol named as "it" or "this method"; no links, code, short ones or openers
    mount = symbol("Mux.Mount", "Mount attaches a router. It's useful to split up a large API with Mount(). "
                   "Mount simply sets a wildcard along the pattern given. See https://example.com for more. "
                   "Too short here. A route/handler may look like this:", "method")  # fmt: skip
    assert details(mount) == [
        "It's useful to split up a large API with this method.", "It simply sets a wildcard along the pattern given.",
    ]  # fmt: skip
    assert details(
        symbol("NotFound", "NotFound sets a handler. The default handler is `http.NotFound` as written.")
    ) == [
        "The default handler is `http.NotFound` as written."  # another package's name stays
    ]


def test_each_fact_is_stated_several_ways_and_todays_mix_is_reproduced(route_repo, tmp_path):
    settings = GenerationSettings()
    index, _ = index_repo(route_repo, GoSource(url=str(route_repo)), "route", settings, tmp_path / "cache")
    uses = {}
    for snippet in read_usage(route_repo, index, index.short_names(), settings).snippets:
        uses.setdefault(snippet.key, []).append(snippet)
    items = generate(index, "route", "abc", settings, uses)
    per_kind = Counter(item.provenance["template"] for item in items)
    assert per_kind == {
        "what_does": 14, "tool_lookup": 7, "signature": 10, "which_symbol": 27, "usage": 6, "call_in_context": 5,
        "no_such_api": 21, "contrast": 1, "detail": 2, "members": 1, "overview": 1,
    }  # fmt: skip
    detail = [i.messages[1]["content"] for i in items if i.provenance["template"] == "detail"]
    assert all('"Use HandleFunc for a plain function."' in q for q in detail) and len(set(detail)) == 2
    logger = [i for i in items if i.key == "example.com/route.Logger"]
    questions = [i.messages[1]["content"] for i in logger if i.provenance["template"] == "which_symbol"]
    assert len(set(questions)) == 4 and all("log each request to stderr" in q or "logs each" in q for q in questions)
    names = {s.name for s in index.symbols}
    for item in (i for i in items if i.provenance["template"] == "no_such_api"):
        fake = item.messages[1]["content"].split("`")[1].removeprefix("route.")
        assert fake not in names and "`route." in item.messages[-1]["content"]
    # no answer writes a name the framework lacks, the no_such_api ones included: what answers write is learned
    known = SymbolIndex(asdict(symbol) for symbol in index.symbols)
    written = [m.get("content") or "" for i in items for m in i.messages if m["role"] == "assistant"]
    assert [name for text in written for name, ok in known.mentions(text) if not ok] == []
    # a symbol its doc says what it is, not what it does: asked for by that, never "how do I …" (it has no job)
    prefix = [i for i in items if i.key == "example.com/route.DefaultPrefix"]
    asked = [i.messages[1]["content"] for i in prefix if i.provenance["template"] in ("which_symbol", "no_such_api")]
    assert len(asked) == 6 and not any("right way to" in q or "should I use to" in q for q in asked)
    assert all("that is the prefix every new router starts with" in q for q in asked[:2])
    invented = next(i for i in prefix if i.provenance["template"] == "no_such_api").messages[-1]["content"]
    assert "Use `route.DefaultPrefix`, the variable that is the prefix every new router starts with" in invented
    usage = next(i for i in items if i.provenance["template"] == "usage" and i.key.endswith(".Param"))
    assert (
        usage.provenance["file"] == "_examples/hello/main.go"
        and 'route.Param(req, "id")' in usage.messages[-1]["content"]
    )

    today = GenerationMix(what_does=1, signature=1, which_symbol=0, usage=0, call_in_context=0,
                          contrast=0, detail=0, no_such_api=0)  # fmt: skip
    old = generate(index, "route", "abc", GenerationSettings(mix=today, max_per_symbol=4), uses)
    assert Counter(i.provenance["template"] for i in old) == {
        "what_does": 7, "tool_lookup": 7, "signature": 5, "members": 1, "overview": 1,
    }  # fmt: skip
