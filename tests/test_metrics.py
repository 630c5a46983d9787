"""Generation metrics on hand-made records whose right values are known, and scoring a predictions file."""

import json
import shutil

import pytest

from tests.helpers import CHI
from trainer.api_index import SymbolIndex
from trainer.cli import main
from trainer.evaluation import metrics
from trainer.evaluation.generation import parse_assistant
from trainer.evaluation.metrics import (
    go_code_metrics,
    go_parses,
    grounding_metrics,
    score,
    score_groups,
    tool_call_metrics,
)
from trainer.evaluation.report import reground, write_report
from trainer.report_format import headline, summary_line

SYMBOLS = [
    {"package": "github.com/go-chi/chi/v5", "name": "NewRouter", "kind": "func"},
    {"package": "github.com/go-chi/chi/v5", "name": "URLParam", "kind": "func"},
    {"package": "github.com/go-chi/chi/v5", "name": "Mux", "kind": "type"},
    {"package": "github.com/go-chi/chi/v5", "name": "Mux.Get", "kind": "method"},
    {"package": "github.com/go-chi/chi/v5/middleware", "name": "Logger", "kind": "func"},
    {"package": "github.com/go-chi/chi/v5/middleware", "name": "LogFormatter", "kind": "type",
     "members": [{"name": "NewLogEntry", "type": "NewLogEntry(r *http.Request) LogEntry", "doc": ""}]},
]  # fmt: skip


def answer(content=None, calls=None):
    message = {"role": "assistant"}
    if content is not None:
        message["content"] = content
    if calls is not None:
        message["tool_calls"] = calls
    return message


def record(reference, prediction):
    return {"id": "x", "messages": [{"role": "user", "content": "q"}], "reference": reference, "prediction": prediction}


CALL = {"name": "lookup_docs", "arguments": {"package": "chi", "name": "URLParam"}}


def test_tool_call_metrics_count_each_denominator_separately():
    records = [
        record(answer(calls=[CALL]), answer(calls=[CALL])),  # right name, right arguments
        record(answer(calls=[CALL]), answer(calls=[{**CALL, "arguments": {"name": "Get"}}])),  # right name only
        record(answer(calls=[CALL]), answer("It is chi.URLParam.")),  # missed call: wrong on both
        record(answer("Use chi.NewRouter()."), answer(calls=[CALL])),  # false call
        record(answer("Use chi.NewRouter()."), answer('<tool_call>{"name": broken</tool_call>')),  # malformed, false
        record(answer("Use chi.NewRouter()."), answer("Use chi.NewRouter().")),
    ]
    assert tool_call_metrics(records) == {
        "call_rate": 4 / 6,
        "call_recall": 2 / 3,  # of the 3 references that call, 2 predictions call (the third answers in text)
        "call_references": 3,
        "wellformed_rate": 3 / 4,  # 4 predictions attempt a call, the broken one is not well formed
        "name_accuracy": 2 / 3,
        "args_exact": 1 / 3,
        "false_call_rate": 2 / 3,
    }
    assert tool_call_metrics([records[-1]]) == {
        "call_rate": 0.0, "call_recall": None, "call_references": 0, "wellformed_rate": None, "name_accuracy": None,
        "args_exact": None, "false_call_rate": 0.0,
    }  # fmt: skip


def test_held_out_headline_counts_answers_that_call_a_tool_and_answers_that_invent():
    index = SymbolIndex(SYMBOLS)
    heldout = [
        record(answer(calls=[CALL]), answer(calls=[CALL])),  # looked it up
        record(answer(calls=[CALL]), answer('<tool_call>{"name": broken</tool_call>')),  # tried to
        record(answer(calls=[CALL]), answer("Use `chi.NewRouter()` and chi.Recover(h).")),  # invented chi.Recover
        record(answer(calls=[CALL]), answer("I do not know that function.")),
    ]
    seen = [
        record(answer("Use chi.NewRouter()."), answer("Use chi.NewRouter().")),  # known only
        record(answer("Use chi.NewRouter()."), answer("Use chi.Router2() and middleware.Nope.")),  # two, one answer
    ]
    records = [{**r, "group": "heldout"} for r in heldout] + seen  # no group: seen
    scores = score_groups(records, index)
    assert (scores["tool_call"]["call_rate"], scores["api_grounding"]["invented_rate"]) == (2 / 6, 2 / 6)
    assert scores["api_grounding"]["grounded_rate"] == 2 / 5
    held, trained = scores["groups"]["heldout"], scores["groups"]["seen"]

    def counts(group):
        return group["n_examples"], group["tool_call"]["call_rate"], group["api_grounding"]["invented_rate"]

    assert (counts(held), counts(trained)) == ((4, 0.5, 0.25), (2, 0.0, 0.5))
    assert held["api_grounding"]["invented"] == ["chi.Recover"] and held["tool_call"]["name_accuracy"] == 1 / 4
    assert trained["api_grounding"]["invented"] == ["chi.Router2", "middleware.Nope"]
    assert grounding_metrics(heldout, None)["invented_rate"] is None  # no symbols.jsonl: nothing to measure
    empty = score_groups(seen, index)["groups"]["heldout"]
    assert empty["n_examples"] == 0 and empty["tool_call"]["call_rate"] is None and empty["exact_match"] is None


def test_report_shows_each_metric_for_all_seen_and_held_out(tmp_path):
    records = [
        {**record(answer(calls=[CALL]), answer(calls=[CALL])), "group": "heldout"},
        {**record(answer(calls=[CALL]), answer("It is chi.Nope().")), "group": "heldout"},
        record(answer("Use chi.NewRouter()."), answer("Use chi.NewRouter().")),
        {**record(answer("Use chi.NewRouter()."), answer("Use chi.Nope().")), "group": "howto"},
    ]
    report = score_groups(records, SymbolIndex(SYMBOLS))
    write_report(report, tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert "4 test conversations: 1 about seen symbols, 2 about held-out symbols, 1 hand-written how-to." in markdown
    assert "| metric | all | seen | held-out | how-to |" in markdown
    assert "| tool_call.call_rate | 0.2500 | 0.0000 | 0.5000 | 0.0000 |" in markdown
    assert "| api_grounding.invented_rate (lower is better) | 0.5000 | 0.0000 | 0.5000 | 1.0000 |" in markdown
    assert "| api_grounding.recall | 0.5000 | 1.0000 | — (no reference answer names a" in markdown
    assert "| tool_call.name_accuracy | 0.5000 | — (no reference answer calls a tool) | 0.5000 | — (no" in markdown
    assert "| general.pass_rate | — (general prompts not answered" in markdown and "answered (a predictions" in markdown
    assert json.loads((tmp_path / "report.json").read_text())["groups"]["heldout"]["n_examples"] == 2
    assert summary_line(report).endswith(
        "held-out symbols (2): tool_call.call_rate 0.5, tool_call.call_recall 0.5, api_grounding.invented_rate 0.5"
    )
    assert (headline(report)["heldout.tool_call.call_rate"], headline(report)["tool_call.call_rate"]) == (0.5, 1 / 4)
    write_report(score_groups(records[2:3], None), tmp_path)  # a dataset without held-out symbols
    markdown = (tmp_path / "report.md").read_text()
    assert "| tool_call.call_rate | 0.0000 | 0.0000 | — | — |" in markdown
    assert "Every held-out column is empty: no held-out test conversations (data.heldout_symbols_fraction" in markdown


def test_test_rows_are_grouped_by_the_heldout_mark_and_hand_written_provenance():
    from trainer.evaluation.generation import prompts_of

    messages = json.dumps([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    provenances = [
        '{"symbol": "chi.Mux", "heldout": true}', '{"symbol": "chi.Mux", "template": "what_does"}', "",
        '{"heldout": "yes"}', '{"file": "ex.jsonl", "line": 3}', '{"file": "ex.jsonl", "line": 4, "heldout": true}',
    ]  # fmt: skip
    rows = [{"id": str(i), "messages": messages, "tools": "", "provenance": p} for i, p in enumerate(provenances)]
    assert [p.group for p in prompts_of(rows)] == ["heldout", "seen", "seen", "seen", "howto", "heldout"]


def test_a_heldout_tool_conversation_is_asked_for_its_lookup_and_a_seen_one_for_its_answer():
    from trainer.evaluation.generation import prompts_of

    call = {"name": "lookup_docs", "arguments": {"package": "github.com/go-chi/chi/v5", "name": "Mux.Mount"}}
    turns = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "How do I use `chi.Mux.Mount`?"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "content": "func (mx *Mux) Mount(pattern string, handler http.Handler)"},
        {"role": "assistant", "content": "Mount attaches another handler."},
    ]
    row = {"messages": json.dumps(turns), "tools": json.dumps([{"type": "function", "function": {"name": "x"}}])}
    heldout, seen = prompts_of([row | {"id": "h", "provenance": '{"heldout": true}'}, row | {"id": "s"}])
    assert (len(heldout.messages), heldout.reference["tool_calls"]) == (2, [call])
    assert (len(seen.messages), seen.reference["content"]) == (4, "Mount attaches another handler.")


def test_generated_text_keeps_unparsable_tool_calls_for_the_scorer():
    text = '<tool_call>{"name": "lookup_docs", "arguments": {"name": "Mux"}}</tool_call>\n<tool_call>{oops</tool_call>'
    message = parse_assistant(text)
    assert message["tool_calls"] == [{"name": "lookup_docs", "arguments": {"name": "Mux"}}]
    assert message["content"] == "<tool_call>{oops</tool_call>"


def test_go_blocks_parse_as_files_declarations_or_statements():
    content = (
        '```go\nr := chi.NewRouter()\nr.Get("/", h)\n```\n'  # statements
        "```go\nfunc h(w http.ResponseWriter, r *http.Request) {}\n```\n"  # a declaration
        "```go\npackage main\n\nfunc main() {}\n```\n"  # a file
        "```go\nr := chi.NewRouter(\n```\n"  # broken
        "```python\nnot go\n```"
    )
    result = go_code_metrics([record(answer("x"), answer(content))])
    assert (result["blocks"], result["parse_rate"]) == (4, 3 / 4)
    if shutil.which("gofmt"):
        assert result["gofmt_parse_rate"] == 3 / 4
    assert go_code_metrics([record(answer("x"), answer("no code"))])["parse_rate"] is None


def test_score_groups_checks_each_go_block_once_and_scores_each_group_as_score_does(monkeypatch):
    twice = "```go\nr := chi.NewRouter()\n```\n```go\nr := chi.NewRouter(\n```"
    records = [
        record(answer("x"), answer(twice)),
        {**record(answer("x"), answer(twice)), "group": "heldout"},
        record(answer("x"), answer("```go\npackage main\n```")),
    ]
    parses = []
    monkeypatch.setattr(metrics, "go_parses", lambda block, check: parses.append(block) or go_parses(block, check))
    scored = score_groups(records, None)
    checkers = 2 if shutil.which("gofmt") else 1  # tree-sitter, and gofmt where installed
    assert len(parses) == 3 * checkers  # three distinct blocks, where each scoring checked 5 over all, 5 in groups
    assert scored["go_code"] == score(records, None)["go_code"] and scored["go_code"]["parse_rate"] == 3 / 5
    assert scored["groups"]["seen"]["go_code"] == score([records[0], records[2]], None)["go_code"]
    assert scored["groups"]["heldout"]["go_code"] == score([records[1]], None)["go_code"]


@pytest.mark.parametrize(
    ("text", "invented", "mentions"),
    [
        (
            'Call `chi.NewRouter()` then `r.Get`; read params with chi.URLParam(r, "id") or chi.PathParam(r). '
            "Mux.Get registers a route, Mux.Route does not exist, middleware.Logger logs and middleware.Tracer "
            "does not. http.Request is the standard library's. `Serve()` is invented too.",
            ["Mux.Route", "Serve", "chi.PathParam", "middleware.Tracer"],
            8,
        ),
        # Go docs name methods bare, as the framework's own comments do ("calls `AbortWithStatus()`"), and a type's
        # method list writes `Get(pattern string, ...)`: a bare call a framework type has as a method exists. An
        # interface's methods and a struct's fields are the type's API though symbols.jsonl lists them as members.
        (
            "`Mux` has `Get(pattern string, h http.HandlerFunc)`; `GetParam(r)` and `Logger()` are calls too. "
            "`middleware.LogFormatter.NewLogEntry` is an interface method, `NewLogEntry(r)` too, "
            "`LogFormatter.Entry` is not.",
            ["GetParam", "LogFormatter.Entry"],
            6,
        ),
    ],
)
def test_api_grounding_finds_invented_names(text, invented, mentions):
    index = SymbolIndex(SYMBOLS)
    result = grounding_metrics([record(answer("x"), answer(text))], index)
    assert (result["invented"], result["mentions"]) == (invented, mentions)
    assert result["grounded_rate"] == (mentions - len(invented)) / mentions
    assert grounding_metrics([record(answer("x"), answer("plain words"))], index)["grounded_rate"] is None


def asking(text, **more):
    """A record whose question names the invented `chi.PathParam`, answered with `text`."""
    question = [{"role": "user", "content": "How do I use `chi.PathParam`?"}]
    return {**record(answer("x"), answer(text)), "messages": question, **more}


def test_a_name_the_question_invented_is_not_the_answers_invention():
    index = SymbolIndex(SYMBOLS)
    denies = asking("There is no `chi.PathParam` in chi. Use `chi.URLParam`.")
    invents = asking("`chi.PathParam` or `chi.Param` reads it.")
    result = grounding_metrics([denies, invents], index)
    assert (result["invented_rate"], result["invented"], result["mentions"]) == (1 / 2, ["chi.Param"], 2)
    unasked = grounding_metrics([record(answer("x"), answer("There is no `chi.PathParam`."))], index)
    assert unasked["invented"] == ["chi.PathParam"]  # nobody asked for it: the answer brought it up


def test_a_name_the_token_limit_cut_is_not_an_invention():
    index = SymbolIndex(SYMBOLS)
    cut = ["It is a function that takes a `Mux.Ge", "Import chi.URLPar", "See `middleware.LogFormatter.NewLog"]
    scored = grounding_metrics([record(answer("x"), answer(text)) for text in cut], index)
    assert (scored["invented_rate"], scored["mentions"]) == (0, 0)
    # Not at the end, or no real name begins so: invented as before.
    made_up = ["Use `Mux.Ge` here.", "Import chi.URLPath", "It takes a `Mux.Gets"]
    scored = grounding_metrics([record(answer("x"), answer(text)) for text in made_up], index)
    assert (scored["invented_rate"], scored["invented"]) == (1, ["Mux.Ge", "Mux.Gets", "chi.URLPath"])


def test_reground_scores_grounding_again_from_the_kept_answers_and_keeps_the_rest(tmp_path):
    records = [
        asking("There is no `chi.PathParam`.", baseline=answer("Use `chi.Bad`.")),
        {
            **record(answer("x"), answer("Use `chi.URLParam`.")),
            "group": "heldout",
            "baseline": answer("`chi.PathParam`"),
        },
    ]
    (tmp_path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    groups = {group: {"n_examples": 1, "api_grounding": {}} for group in metrics.GROUPS}
    stale = {"api_grounding": {"invented_rate": 1.0}, "groups": groups}
    report = {"n_examples": 2, "loss": 0.5, **stale, "baseline": json.loads(json.dumps(stale))}
    (tmp_path / "report.json").write_text(json.dumps(report))
    reground(tmp_path, SymbolIndex(SYMBOLS))
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["loss"] == 0.5 and written["api_grounding"]["invented_rate"] == 0.0
    assert written["baseline"]["api_grounding"]["invented"] == ["chi.Bad", "chi.PathParam"]  # the second: not asked
    assert written["baseline"]["groups"]["heldout"]["api_grounding"]["invented_rate"] == 1.0
    assert written["delta"]["api_grounding.invented_rate"] == -1.0
    assert "| api_grounding.invented_rate (lower is better) | 0.0000 |" in (tmp_path / "report.md").read_text()


def test_text_metrics_are_one_for_identical_answers_and_lower_otherwise():
    same = score([record(answer("Call chi.NewRouter() first."), answer("Call chi.NewRouter() first."))], None)
    assert (same["rougeL"], same["chrf"], same["exact_match"]) == (1.0, 1.0, 1.0)
    other = score([record(answer("Call chi.NewRouter() first."), answer("Use gin.New() instead."))], None)
    assert other["rougeL"] < 0.3 and other["chrf"] < 0.3 and other["exact_match"] == 0.0
    only_calls = score([record(answer(calls=[CALL]), answer(calls=[CALL]))], None)
    assert only_calls["rougeL"] is None and only_calls["chrf"] is None


def test_scoring_a_predictions_file_without_a_model(tmp_path, capsys):
    from trainer.report_format import HEADLINE

    symbols = tmp_path / "symbols.jsonl"
    symbols.write_text("".join(json.dumps(s) + "\n" for s in SYMBOLS))
    predictions = tmp_path / "predictions.jsonl"
    rows = [
        record(answer("Use `chi.NewRouter()`."), answer("Use `chi.NewRouter()`.")),
        record(answer(calls=[CALL]), answer(calls=[CALL])),
        record(answer("Use chi.URLParam."), answer("Use chi.Param.")),
    ]
    predictions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "report"
    code = main(["evaluate", "--predictions", str(predictions), "--symbols", str(symbols), "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_examples"] == 3 and report["tool_call"]["name_accuracy"] == 1.0
    assert report["api_grounding"] == {
        "grounded_rate": 1 / 2, "invented_rate": 1 / 3, "mentions": 2, "invented": ["chi.Param"],
        "recall": 1 / 2, "recall_references": 2,  # chi.NewRouter named again, chi.URLParam not
    }  # fmt: skip
    assert "loss" not in report and report["go_code"]["parse_rate"] is None
    markdown = (out / "report.md").read_text()
    assert "| api_grounding.grounded_rate | 0.5000 |" in markdown and "`chi.Param`" in markdown
    # every headline metric has its row; nothing measured is a dash with the reason, not a missing row
    assert (
        "| loss (lower is better) | — (predictions scored without a model, or evaluation.teacher_forced off) |"
        in markdown
    )
    assert "| tool_call.false_call_rate (lower is better) | 0.0000 |" in markdown
    assert "| go_code.parse_rate | — (no Go code block in the answers) |" in markdown
    assert [line.split(" |")[0].split(" (")[0] for line in markdown.splitlines() if line.startswith("| ")][2:] == [
        f"| {key}" for key in HEADLINE
    ]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "invalid JSON"),
        (json.dumps({"reference": {}, "prediction": {}, "extra": 1}), "expected an object with keys"),
        (json.dumps({"reference": {"content": 3}, "prediction": {}}), "'reference.content' must be a string"),
        (json.dumps({"reference": {}, "prediction": {"tool_calls": "x"}}), "'prediction.tool_calls' must be a list"),
        (json.dumps({"reference": {}, "prediction": {}, "group": "train"}), "'group' must be one of ['seen', 'h"),
    ],
)
def test_bad_prediction_lines_are_named(tmp_path, capsys, line, reason):
    predictions = tmp_path / "p.jsonl"
    predictions.write_text(json.dumps(record(answer("a"), answer("a"))) + "\n" + line + "\n")
    assert main(["evaluate", "--predictions", str(predictions), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{predictions}:2: " in err and reason in err


def test_api_recall_is_the_share_of_the_references_framework_names_the_answer_names_too():
    index = SymbolIndex(SYMBOLS)
    records = [
        record(answer("`chi.Mux.Get`:\n\n```go\nfunc (mx *Mux) Get()\n```"), answer("Use `Mux.Get`.")),  # one name
        record(answer("Call chi.NewRouter() and chi.URLParam(r, k)."), answer("chi.NewRouter() and chi.Param.")),
        record(answer("Use http.Request."), answer("chi.NewRouter()")),  # no framework name: not counted
        record(answer("middleware.Logger logs."), answer("I do not know.")),
    ]
    assert metrics.api_recall(records, index) == ((1 + 1 / 2 + 0) / 3, 3)
    assert metrics.api_recall(records[2:3], index) == (None, 0)
    assert grounding_metrics(records, None)["recall"] is None


def test_general_prompts_ship_with_the_package_and_pass_on_what_a_plain_answer_must_say():
    from trainer.evaluation.general import general_prompts, general_records, general_score, passes

    prompts, expected = general_prompts()
    assert len(prompts) == len(expected) >= 10 and all(p.messages[0]["role"] == "user" for p in prompts)
    assert all(passes(p.reference["content"], expected[p.id]) for p in prompts)  # each reference passes its own test
    assert passes("It is Paris.", [r"\bParis\b"]) and not passes("Comparison", [r"\bParis\b"])
    answers = {
        "prediction": [p.reference["content"] for p in prompts],
        "baseline": ["chi.NewRouter()"] + [p.reference["content"] for p in prompts[1:]],
    }
    records = general_records(prompts, expected, answers)
    assert (records[0]["prediction_passed"], records[0]["baseline_passed"]) == (True, False)
    assert general_score(records, "prediction") == {"n_examples": len(prompts), "pass_rate": 1.0}
    assert general_score(records, "baseline")["pass_rate"] == (len(prompts) - 1) / len(prompts)


needs_go = pytest.mark.skipif(
    shutil.which("go") is None or not CHI.is_dir(), reason="no Go toolchain or Debian's chi: run `make go-sources`"
)


@pytest.mark.slow
@needs_go
def test_compile_rate_counts_answers_whose_every_block_builds_and_notes_the_first_message(tmp_path):
    from trainer.evaluation.compile import Compiler, compile_notes
    from trainer.go.check import CheckTarget

    good = 'r := chi.NewRouter()\nr.Get("/", func(w http.ResponseWriter, r *http.Request) {})\n'
    misspelt = good.replace("NewRouter", "NewRuoter")
    records = [
        record(answer("x"), answer(f"```go\n{good}```")),
        record(answer("x"), answer(f"```go\n{good}```\n```go\n{misspelt}```")),  # one block fails: the answer fails
        record(answer("x"), answer("No code.")),  # not counted
        {**record(answer("x"), answer(f"```go\n{misspelt}```")), "group": "heldout"},
    ]
    records[0]["baseline"] = answer(f"```go\n{misspelt}```")
    compiler = Compiler([CheckTarget("github.com/go-chi/chi/v5", CHI)], tmp_path / "go")
    scored = score_groups(records, None, compiler)
    assert (scored["go_code"]["answers_with_code"], scored["go_code"]["compile_rate"]) == (3, 1 / 3)
    assert scored["groups"]["heldout"]["go_code"]["compile_rate"] == 0.0
    assert score(records, None)["go_code"]["compile_rate"] is None  # no compiler: nothing measured
    compile_notes(records, compiler)
    assert records[1]["compile"]["prediction"][0] is None
    assert "undefined: chi.NewRuoter" in records[1]["compile"]["prediction"][1]
    assert records[1]["compile"]["prediction"][1].startswith("snippet.go:1:")  # the block's own line
    assert records[0]["compile"] == {"prediction": [None], "baseline": [records[1]["compile"]["prediction"][1]]}
    assert "compile" not in records[2]


def test_a_limit_takes_the_groups_in_turn_each_in_split_order():
    from trainer.evaluation.generation import in_turn

    def row(name: str, provenance: str) -> dict:
        return {"id": name, "provenance": provenance}

    seen, held, howto = (
        '{"template": "returns"}',
        '{"template": "what_does", "heldout": true}',
        '{"file": "a", "line": 1}',
    )
    rows = [row("w1", howto), row("s1", seen), row("s2", seen), row("s3", seen), row("h1", held), row("h2", held)]
    assert [r["id"] for r in in_turn(rows)] == ["s1", "h1", "w1", "s2", "h2", "s3"]
