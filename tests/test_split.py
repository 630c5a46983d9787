"""The split's held-out symbols and recitation policy (trainer/synthesis/split.py), on constructed rows and on the
demo data (the sample examples and chi from Debian's package)."""

import json
from collections import Counter

import pytest

from tests.helpers import CHI, DEBUG_CONFIG, USAGE_ON, debug_overrides
from trainer.api_index import SymbolIndex
from trainer.config_file import load_config
from trainer.data_config import DataConfig
from trainer.dataset import example_id, is_heldout
from trainer.synthesis.phrasings import PROBE_TEMPLATES
from trainer.synthesis.split import SPAN_WORDS, assign_split, heldout_symbols, sharing, split_rows
from trainer.synthesis.synthesize import synthesize

PKG = "example.com/web"
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen"]


def symbol(name, kind="func"):
    return {"package": PKG, "name": name, "kind": kind, "package_name": "web"}


def text(row):
    """Every turn's text and tool-call arguments of a saved row, as a check for names reads it."""
    messages = json.loads(row["messages"])
    return "\n".join((m.get("content") or "") + json.dumps(m.get("tool_calls") or "") for m in messages)


def row(answer, provenance, question="q?"):
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    source = provenance.get("symbol") or provenance.get("file")
    return {
        "id": example_id(messages, None),
        "messages": json.dumps(messages),
        "tools": "",
        "source": source,
        "provenance": json.dumps(provenance),
    }


def test_recitation_counts_shared_spans_of_twelve_prose_words_outside_code():
    twelve = " ".join(WORDS[:12])
    test_answers = [
        [f"Intro. {twelve.upper()}, then more."],  # case and punctuation do not hide the span
        [" ".join(WORDS[:11]) + " x"],  # 11 words in common: not a span
        [f"```go\n{twelve}\n```"],  # inside a fenced block: code aside
        ["short", f"so: {' '.join(WORDS[1:13])}"],  # the second answer of a multi-turn row, shifted by one word
    ]
    train_answers = iter([[f"We say {twelve}"], [" ".join(WORDS[1:])]])  # a generator: streamed once
    assert sharing(test_answers, train_answers) == {0, 3}
    assert SPAN_WORDS == 12
    assert sharing(test_answers, [[f"```\n{twelve}\n```"], [" ".join(WORDS[:11])]]) == set()


def test_heldout_choice_is_per_symbol_stable_and_takes_methods_with_their_type():
    symbols = [symbol(f"T{i}", "type") for i in range(400)] + [symbol(f"T{i}.M", "method") for i in range(400)]
    held = heldout_symbols(symbols, "salt", 0.1)
    types = {key for key in held if "." not in key.removeprefix(PKG + ".")}
    assert 0.05 < len(types) / 400 < 0.15
    assert {f"{key}.M" for key in types} <= held  # every held-out type's method goes with it
    assert len(held - {f"{key}.M" for key in types}) > len(types)  # and methods are also drawn on their own
    more = symbols + [symbol(f"New{i}") for i in range(300)] + [{**symbol("T1", "type"), "package": "other.org/x"}]
    assert heldout_symbols(more, "salt", 0.1) & held == held  # another source's symbols reshuffle nothing
    assert heldout_symbols(symbols, "salt", 0) == set()
    assert heldout_symbols(symbols, "other-salt", 0.1) != held


def test_rows_about_or_naming_a_heldout_symbol_are_all_in_test_and_marked():
    symbols = [symbol(f"F{i}") for i in range(60)]
    held = heldout_symbols(symbols, "s", 0.2)
    hidden = sorted(held)[0].removeprefix(PKG + ".")
    seen = next(s["name"] for s in symbols if f"{PKG}.{s['name']}" not in held)
    generated = {"template": "what_does", "package": PKG}
    rows = [
        *(row(f"{hidden} answer {i}", generated | {"symbol": f"{PKG}.{hidden}"}, f"q{i}") for i in range(20)),
        row("example code", generated | {"template": "example", "symbol": f"{PKG}.{hidden}#Example{hidden}"}),
        row("teacher answer", generated | {"template": "teacher", "symbol": f"{PKG}.{hidden}", "teacher": {}}),
        *(row(f"Call `web.{hidden}()` {i}.", {"file": "a.jsonl", "line": i}) for i in range(20)),  # hand-written
        *(row(f"Use [{hidden}] here {i}.", generated | {"symbol": f"{PKG}.{seen}"}, f"r{i}") for i in range(20)),
        *(row(f"About {seen} {i}.", generated | {"symbol": f"{PKG}.{seen}"}, f"s{i}") for i in range(40)),
    ]
    data = DataConfig(split_salt="s", heldout_symbols_fraction=0.2)
    result = split_rows(rows, symbols, data)
    marked = [r for split in result.by_split.values() for r in split if '"heldout": true' in r["provenance"]]
    assert len(marked) == 62 and all(r in result.by_split["test"] for r in marked)
    assert result.heldout["about_heldout_symbol"] == 22
    assert result.heldout["naming_heldout_symbol"]["count"] == 40
    assert result.heldout["conversations"] == 62 and result.heldout["symbols"] == len(held)
    hash_test = {r["id"] for r in rows if assign_split(r["id"], "s", 0.1, 0.1) == "test"}
    assert result.heldout["moved_to_test"] == sum(r["id"] not in hash_test for r in marked) > 40
    index = SymbolIndex(s for s in symbols if f"{PKG}.{s['name']}" in held)
    for split in ("train", "validation"):
        assert not any(index.referenced(text(r)) for r in result.by_split[split])
    unmarked = [r for r in result.by_split["test"] if r not in marked]
    assert all(json.loads(r["provenance"]).get("heldout") is None for r in unmarked)

    nothing = split_rows(rows, symbols, DataConfig(split_salt="s", heldout_symbols_fraction=0))
    assert nothing.heldout["symbols"] == nothing.heldout["conversations"] == 0
    assert not any("heldout" in r["provenance"] for split in nothing.by_split.values() for r in split)


def test_reciting_generated_test_rows_move_to_train_and_hand_written_ones_stay():
    doc = " ".join(WORDS)
    seen = {"template": "what_does", "package": PKG, "symbol": f"{PKG}.Seen"}
    rows = [row(f"{doc} ({i})", seen, f"q{i}") for i in range(30)]
    rows += [row(f"{doc} [hand {i}]", {"file": "h.jsonl", "line": i}, f"h{i}") for i in range(30)]
    data = DataConfig(split_salt="s", heldout_symbols_fraction=0, validation_fraction=0.3, test_fraction=0.3)
    result = split_rows(rows, [symbol("Seen")], data)
    test = result.by_split["test"]
    assert test and all(r["source"] == "h.jsonl" for r in test)  # every generated one recited, so it trains
    recitation = result.recitation
    assert recitation["before"]["test_answers"] == recitation["before"]["sharing_span"]
    assert recitation["moved_to_train"]["count"] == recitation["before"]["test_answers"] - len(test)
    assert recitation["test_answers"] == recitation["sharing_span"] == len(test)  # hand-written ones are counted
    assert recitation["by_group"]["seen"]["test_answers"] == len(test)


@pytest.mark.slow  # the usage conversations' compile check builds net/http and chi in a fresh cache (~10-40 s)
@pytest.mark.skipif(not CHI.is_dir(), reason="needs Debian's chi package: `make go-sources`")
def test_demo_data_holds_out_symbols_in_test_keeps_a_seen_group_and_no_recitation(tmp_path, model_cache, sample_copy):
    config = load_config(DEBUG_CONFIG, [*debug_overrides(tmp_path, model_cache, sample_copy), USAGE_ON])
    result = synthesize(config)
    manifest, dataset = result.manifest, result.dataset
    heldout, recitation = manifest["heldout"], manifest["recitation"]
    symbols = [json.loads(line) for line in (config.data.output_dir / "symbols.jsonl").open()]
    index = SymbolIndex(s for s in symbols if f"{s['package']}.{s['name']}" in set(heldout["names"]))

    def marked(split):
        return [json.loads(r["provenance"]).get("heldout") is True for r in dataset[split]]

    assert heldout["symbols"] == 10 and heldout["conversations"] == sum(marked("test")) == 174
    assert not any(marked("train")) and not any(marked("validation"))
    for split in ("train", "validation"):  # usage code naming a held-out symbol went to test too
        assert not [r["source"] for r in dataset[split] if index.referenced(text(r))]
    # The hash split (probes in test already): 118 of its 263 test answers repeat a 12-word span of a training answer
    # (each fact is stated several ways: 27 of 159 with one way per template).
    assert recitation["before"] == {"test_answers": 263, "sharing_span": 118, "share": 0.4487}
    # The seen group: 14 rows before probes (issue 28); now at least 100, none reciting a training answer.
    assert recitation["by_group"]["seen"]["test_answers"] == 134 and recitation["sharing_span"] == 0
    templates = Counter(json.loads(r["provenance"]).get("template") for r in dataset["test"] if not is_heldout(r))
    assert templates["reverse_lookup"] + templates["returns"] == 110
    trained = {json.loads(r["provenance"]).get("template") for split in ("train", "validation") for r in dataset[split]}
    assert not trained & set(PROBE_TEMPLATES)  # every probe is a test question
    assert manifest["counts"] == {"train": 1076, "validation": 123, "test": 308}
    usage = manifest["sources"][0]["usage"]  # chi's own tests and _examples/, compiled against chi
    assert (usage["checked"], usage["passed"], usage["symbols"]) == (107, 67, 42)
    assert manifest["generated"]["by_template"]["usage"] == 54
    assert manifest["generated"]["facts"]["conversations_per_symbol"] == {"min": 0, "median": 12, "max": 16}

    hello = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}]
    (sample_copy / "more.jsonl").write_text(json.dumps({"messages": hello}) + "\n")
    assert synthesize(config).manifest["heldout"]["names"] == heldout["names"]


def test_referenced_reads_names_written_as_code_or_qualified_not_prose_or_declarations():
    other = {"package": "example.com/other", "name": "Render", "kind": "func", "package_name": "other"}
    index = SymbolIndex([symbol("Mux", "type"), symbol("Mux.Get", "method"), symbol("Render"), other])
    web = f"{PKG}."
    assert index.referenced("Call web.Render, then Mux.Get.") == {web + "Render", web + "Mux.Get"}
    both = {web + "Render", "example.com/other.Render"}  # a bare name, no home: every package's
    assert index.referenced("A `Mux` serves; see [Render].") == {web + "Mux", *both}
    assert index.referenced("A Mux and Render in plain prose.") == set()
    code = "```go\nfunc (m *Mux) Render(w io.Writer) {}\nfunc Render() {}\n```"
    assert index.referenced(code) == {web + "Mux"}  # declared names are not references
    assert index.referenced("Use `Render(x)`.", home="example.com/other") == {"example.com/other.Render"}
    assert index.referenced("Use `other.Render(x)`.", home=PKG) == {"example.com/other.Render"}
