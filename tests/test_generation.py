"""Conversations generated from the API index: valid, deterministic, capped, provenance kept, hand-written first."""

import json
from collections import Counter
from pathlib import Path

import pytest

from trainer.data_config import GenerationSettings, GoSource
from trainer.go.repo import index_repo
from trainer.synthesis.caps import cap_package_share, cap_per_key
from trainer.synthesis.examples import load_examples
from trainer.synthesis.generate import (
    LOOKUP_DOCS,
    Generated,
    generate,
    generate_probes,
    returned_types,
)
from trainer.synthesis.phrasings import PROBE_TEMPLATES
from trainer.synthesis.split import SPAN_WORDS, prose_words
from trainer.synthesis.synthesize import synthesize

GIN = Path("/usr/share/gocode/src/github.com/gin-gonic/gin")
ROUTER = """// Package route matches paths.
package route

// Router matches request paths to handlers.
type Router struct {
	// Prefix is prepended to every pattern.
	Prefix string
}

// NewRouter returns an empty router with no routes.
func NewRouter() *Router { return &Router{} }

// Handle registers a handler for the pattern given.
func (r *Router) Handle(pattern string, h Handler) {}

// Handler serves one request.
type Handler func(path string) string
"""
README = """# route

Route is a tiny path router for examples and tests of this project.

## Quick start

```go
r := route.NewRouter()
r.Handle("/", hello)
```
"""
EXAMPLE = """package route_test

func ExampleNewRouter() {
	r := route.NewRouter()
	fmt.Println(r.Prefix == "")
	// Output: true
}
"""


@pytest.fixture
def route_repo(tmp_path) -> Path:
    root = tmp_path / "route"
    root.mkdir()
    (root / "go.mod").write_text("module example.com/route\n")
    (root / "route.go").write_text(ROUTER)
    (root / "route_test.go").write_text(EXAMPLE)
    (root / "README.md").write_text(README)
    return root


def conversations(root: Path, tmp_path: Path, **settings) -> list[Generated]:
    generation = GenerationSettings(**settings)
    index, _ = index_repo(root, GoSource(url=str(root)), "route", generation, tmp_path / "cache")
    return generate(index, "route", "abc123", generation)


def by_template(items: list[Generated]) -> dict[tuple[str, str], Generated]:
    """The first conversation of each (template, key): a fact stated several ways has one per phrasing."""
    found: dict[tuple[str, str], Generated] = {}
    for item in items:
        found.setdefault((item.provenance["template"], item.key), item)
    return found


def test_each_template_yields_a_valid_example_with_provenance(route_repo, tmp_path):
    items = conversations(route_repo, tmp_path)
    assert Counter(item.provenance["template"] for item in items) == {
        "what_does": 8, "tool_lookup": 4, "signature": 4, "which_symbol": 16, "no_such_api": 12, "members": 1,
        "example": 1, "overview": 1, "doc_section": 2,
    }  # fmt: skip
    out = tmp_path / "generated"
    out.mkdir()
    lines = [json.dumps({"messages": i.messages, **({"tools": i.tools} if i.tools else {})}) for i in items]
    (out / "g.jsonl").write_text("\n".join(lines) + "\n")
    loaded = load_examples(out)
    assert (len(loaded.examples), loaded.errors) == (len(items), [])  # the hand-written validator accepts them all

    named = by_template(items)
    new_router = named["what_does", "example.com/route.NewRouter"]
    assert new_router.provenance == {
        "source": "route", "commit": "abc123", "file": "route.go", "line": 11, "template": "what_does",
        "symbol": "example.com/route.NewRouter", "package": "example.com/route",
    }  # fmt: skip
    assert new_router.messages[-1]["content"] == (
        "NewRouter returns an empty router with no routes.\n\n`route.NewRouter` is declared in `example.com/route`:"
        "\n\n```go\nfunc NewRouter() *Router\n```"
    )
    tool = named["tool_lookup", "example.com/route.Router.Handle"]
    assert tool.tools == [LOOKUP_DOCS]
    call = tool.messages[2]["tool_calls"][0]
    assert call == {"name": "lookup_docs", "arguments": {"package": "example.com/route", "name": "Router.Handle"}}
    assert tool.messages[3]["content"] == (
        "func (r *Router) Handle(pattern string, h Handler)\n\nHandle registers a handler for the pattern given."
    )
    reverse = [i for i in items if i.provenance["template"] == "which_symbol" and i.key.endswith(".NewRouter")]
    assert all("an empty router with no routes" in i.messages[1]["content"] for i in reverse)
    assert all("`route.NewRouter`" in i.messages[-1]["content"] for i in reverse) and len(reverse) == 4
    # a type is asked for by what its doc says it does too ("Router matches request paths to handlers")
    router = [i for i in items if i.provenance["template"] == "which_symbol" and i.key.endswith(".Router")]
    assert len(router) == 4 and all("request paths to handlers" in i.messages[1]["content"] for i in router)
    example = named["example", "example.com/route.NewRouter#ExampleNewRouter"]
    assert 'r := route.NewRouter()\nfmt.Println(r.Prefix == "")' in example.messages[-1]["content"]
    assert example.messages[-1]["content"].endswith("It prints:\n\n```\ntrue\n```")
    section = named["doc_section", "README.md#route > Quick start"]
    assert section.messages[-1]["content"] == README[README.index("## Quick") :].strip()  # code block intact
    assert (section.provenance["file"], section.provenance["line"]) == ("README.md", 5)


def test_probes_ask_a_trained_fact_the_other_way_round_with_no_prose_to_recite(route_repo, tmp_path):
    generation = GenerationSettings()
    index, _ = index_repo(route_repo, GoSource(url=str(route_repo)), "route", generation, tmp_path / "cache")
    probes = by_template(generate_probes(index, "route", "abc123", generation))
    assert sorted(probes) == [
        ("returns", "example.com/route.NewRouter"),  # *Router: a type of the package; Handle returns nothing
        ("reverse_lookup", "example.com/route.Handler"),
        ("reverse_lookup", "example.com/route.NewRouter"),
        ("reverse_lookup", "example.com/route.Router"),
        ("reverse_lookup", "example.com/route.Router.Handle"),
    ]
    assert generate_probes(index, "route", "abc123", GenerationSettings(probes=False)) == []
    reverse = probes["reverse_lookup", "example.com/route.NewRouter"]
    assert reverse.messages[1]["content"].endswith("function returns an empty router with no routes?")
    assert reverse.messages[-1]["content"] == "`route.NewRouter`:\n\n```go\nfunc NewRouter() *Router\n```"
    assert (
        probes["reverse_lookup", "example.com/route.Router"]
        .messages[1]["content"]
        .endswith("type matches request paths to handlers?")
    )
    assert probes["reverse_lookup", "example.com/route.Router"].messages[-1]["content"] == "`route.Router`."
    returns = probes["returns", "example.com/route.NewRouter"]
    assert returns.messages[-1]["content"].startswith("`*route.Router`:")
    trained = {(i.provenance["template"], i.key) for i in conversations(route_repo, tmp_path)}
    assert not trained & set(probes) and all(t in PROBE_TEMPLATES for t, _ in probes)
    # no prose to recite: the answers hold fewer words outside code than a recitation span
    assert max(len(prose_words(p.messages[-1]["content"])) for p in probes.values()) < SPAN_WORDS
    assert returned_types("func (mx *Mux) With(fn func(http.Handler) http.Handler) Router", {"Router"}) == "Router"
    assert returned_types("func New() (*Mux, error)", {"Mux"}) == "(*Mux, error)"
    assert returned_types("func URLParam(r *http.Request, key string) string", {"Request"}) is None


def test_phrasings_are_seeded_and_deterministic(route_repo, tmp_path):
    def questions(seed: int) -> list[str]:
        return [i.messages[1]["content"] for i in conversations(route_repo, tmp_path, seed=seed)]

    assert questions(0) == questions(0)
    assert any(a != b for a, b in zip(questions(0), questions(1), strict=True))
    gin_like = {q.split("`")[0] for q in questions(0) if q.endswith("?")}
    assert len(gin_like) >= 4  # several phrasings in use, not one template text


def item(package: str, key: str, template: str = "what_does") -> Generated:
    return Generated([], None, {"package": package, "template": template}, key)


def test_cap_per_symbol_keeps_at_most_the_limit_per_symbol():
    items = [item("p", f"p.S{n % 3}", t) for n, t in enumerate(["a", "b", "c", "d", "e", "f", "g"])]
    kept, removed = cap_per_key(items, 2, seed=0)
    assert Counter(i.key for i in kept) == {"p.S0": 2, "p.S1": 2, "p.S2": 2}
    assert removed == 1
    assert [i.provenance["template"] for i in kept] == [i.provenance["template"] for i in cap_per_key(items, 2, 0)[0]]


def test_a_cap_drops_a_kinds_repeats_before_another_kinds_first_phrasing():
    items = [item("p", "p.S", "which_symbol"), item("p", "p.S", "which_symbol")] + [
        item("p", "p.S", kind) for kind in ("what_does", "what_does", "what_does", "signature")
    ]
    kept, removed = cap_per_key(items, 3, seed=0)
    assert sorted(i.provenance["template"] for i in kept) == ["signature", "what_does", "which_symbol"]
    assert removed == 3
    kept = cap_package_share(items + [item("q", "q.S", k) for k in ("a", "b", "c")], 0.5, seed=0)[0]
    assert {i.provenance["template"] for i in kept if i.key == "p.S"} == {"signature", "what_does", "which_symbol"}


def test_package_share_cap_counts_what_is_kept():
    items = [item("big", f"big.S{n}") for n in range(90)] + [item(p, f"{p}.S{n}") for p in "xy" for n in range(5)]
    kept, removed = cap_package_share(items, 0.5, seed=0)
    assert Counter(i.provenance["package"] for i in kept) == {"big": 10, "x": 5, "y": 5}
    assert removed == 80
    assert cap_package_share(items[:90], 0.5, 0) == (items[:90], 0)  # one package: nothing to balance


@pytest.mark.skipif(not GIN.is_dir(), reason="gin's Debian package is missing: run `make go-sources`")
def test_synthesize_gin_with_hand_written_examples_first(make_config, tmp_path):
    config = make_config("data.sources=[]", examples=tmp_path / "none")
    config.data.sources.append(GoSource(url=str(GIN), name="gin"))
    generated = synthesize(config).manifest["generated"]["count"]
    rows = {row["source"]: row for split in synthesize(config).dataset.values() for row in split}
    what_does = next(row for source, row in sorted(rows.items()) if "(what_does)" in source)
    question = json.loads(what_does["messages"])[1]["content"]
    examples = tmp_path / "examples"
    examples.mkdir()
    hand = {
        "messages": [{"role": "user", "content": question.upper() + "!!"}, {"role": "assistant", "content": "Mine."}]
    }
    twin = {"messages": [{"role": "user", "content": "Hi, gin?"}, {"role": "assistant", "content": "Yes."}]}
    near = {"messages": [{"role": "user", "content": "hi gin"}, {"role": "assistant", "content": "yes"}]}
    (examples / "hand.jsonl").write_text("\n".join(json.dumps(r) for r in (hand, twin, near)) + "\n")
    config.data.examples_dir = examples

    result = synthesize(config)
    manifest = result.manifest
    assert manifest["hand_written"] == 2
    assert manifest["near_duplicates"]["count"] == 1 and "hand.jsonl:3" in manifest["near_duplicates"]["records"][0]
    # and gin's types that share a doc comment (render.JSON, render.IndentedJSON, …) ask one reverse_lookup question
    conflicts = [r for r in manifest["conflicts"]["records"] if "hand.jsonl" in r]
    assert len(conflicts) == 1 and conflicts[0].endswith(f"same question as {examples / 'hand.jsonl'}:1")
    assert manifest["generated"]["count"] == generated - 1
    assert sum(manifest["generated"]["by_template"].values()) == generated - 1
    assert sum(manifest["counts"].values()) == manifest["hand_written"] + generated - 1
    (entry,) = manifest["sources"]
    assert (entry["source"], entry["import_path"], entry["index_cached"]) == ("gin", "github.com/gin-gonic/gin", True)
    symbols = [json.loads(line) for line in (config.data.output_dir / "symbols.jsonl").read_text().splitlines()]
    assert len(symbols) == manifest["symbols"]["count"] == entry["symbols"] > 300
    assert Counter(s["kind"] for s in symbols) == manifest["symbols"]["by_kind"]
    context_json = next(s for s in symbols if s["name"] == "Context.JSON")
    assert context_json["signature"] == "func (c *Context) JSON(code int, obj any)"
    assert (context_json["package"], context_json["file"], context_json["source"]) == (
        "github.com/gin-gonic/gin", "context.go", "gin",
    )  # fmt: skip
    assert (GIN / "context.go").read_text().splitlines()[context_json["line"] - 1].startswith("func (c *Context) JSON(")
    for split in result.dataset.values():
        for row in split:
            provenance = json.loads(row["provenance"])
            assert {"file", "line"} <= set(provenance)


def test_the_teachers_material_gathers_constructors_methods_and_examples_and_quotes_the_tool_turn(route_repo, tmp_path):
    from trainer.synthesis.teacher_prompts import subjects

    index, _ = index_repo(route_repo, GoSource(url=str(route_repo)), "route", GenerationSettings(), tmp_path / "cache")
    found = {subject.key: subject for subject in subjects(index, "route@abc123", seed=0)}
    router = found["example.com/route.Router"].material
    assert "Making a Router:\n```go\nfunc NewRouter() *Router\n```" in router
    assert "Methods of Router:\n```go\nfunc (r *Router) Handle(pattern string, h Handler)\n```" in router
    new_router = found["example.com/route.NewRouter"]
    assert "ExampleNewRouter (route_test.go:3):" in new_router.material and "Making a" not in new_router.material
    # what the teacher is told lookup_docs returns is the tool turn generate writes for the same symbol
    lookup = by_template(generate(index, "route", "abc123", GenerationSettings()))
    tool_turn = lookup[("tool_lookup", "example.com/route.NewRouter")].messages[3]
    assert tool_turn["role"] == "tool" and tool_turn["content"] == new_router.tool_result
