"""Which module and package a declaration belongs to, and its text as go/doc shows it: nested go.mod files in every
form go.mod allows, package names that differ from the import path (grounding), CRLF, lint directives, v1 and v2
of one package, the same source twice, `--source .`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.api_index import SymbolIndex
from trainer.data_config import GenerationSettings, GoSource
from trainer.dataset import SYMBOLS_FILE, conversation
from trainer.evaluation.metrics import grounding_metrics
from trainer.go.parser import parse_go_file
from trainer.go.repo import index_repo, module_directive
from trainer.synthesis.synthesize import synthesize

FUNC = "package {name}\n\n// {func} does it.\nfunc {func}() {{}}\n"


@pytest.mark.parametrize(
    ("go_mod", "module"),
    [
        ("module example.com/x\n", "example.com/x"),
        ('// the module\nmodule "example.com/x" // trailing\n\ngo 1.21\n', "example.com/x"),
        ("module `example.com/x`\n", "example.com/x"),
        ("module (\n\texample.com/x\n)\n", "example.com/x"),
        ("module (example.com/x)\n", "example.com/x"),
        ("go 1.21\n\nrequire (\n\tmodule.org/y v1.0.0\n)\n", None),
        ("// module example.com/commented\n", None),
    ],
)
def test_module_directive_in_every_form(go_mod, module):
    assert module_directive(go_mod) == module


def write_tree(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text, newline="")


def test_each_folder_takes_its_import_path_from_the_nearest_go_mod(tmp_path):
    root = tmp_path / "repo"
    write_tree(
        root,
        {
            "go.mod": "module (\n\texample.com/lib/v2 // current\n)\n",
            "lib.go": FUNC.format(name="lib", func="Two"),
            "sub/sub.go": FUNC.format(name="sub", func="Sub"),
            "v3/go.mod": 'module "example.com/lib/v3"\n',
            "v3/lib.go": FUNC.format(name="lib", func="Three"),
            "v3/deep/deep.go": FUNC.format(name="deep", func="Deep"),
            "tools/go.mod": "module example.com/tools\n",
            "tools/gen/gen.go": FUNC.format(name="gen", func="Gen"),
            "other/go.mod": "go 1.21\n",  # a go.mod without a module line changes nothing
            "other/other.go": FUNC.format(name="other", func="Other"),
        },
    )
    index, _ = index_repo(root, GoSource(url=str(root)), "lib", GenerationSettings(), tmp_path / "cache")
    assert index.import_path == "example.com/lib/v2"
    assert {s.name: s.package for s in index.symbols} == {
        "Two": "example.com/lib/v2",
        "Sub": "example.com/lib/v2/sub",
        "Three": "example.com/lib/v3",
        "Deep": "example.com/lib/v3/deep",
        "Gen": "example.com/tools/gen",
        "Other": "example.com/lib/v2/other",
    }
    assert {s.name: s.package_name for s in index.symbols}["Three"] == "lib"


def test_grounding_uses_the_package_name_not_the_import_paths_last_part():
    symbols = [
        {"package": "github.com/mattn/go-sqlite3", "package_name": "sqlite3", "name": "SQLiteDriver", "kind": "type"},
        {"package": "gopkg.in/yaml.v3", "package_name": "yaml", "name": "Marshal", "kind": "func"},
    ]
    index = SymbolIndex(symbols)
    answer = "Use `sqlite3.SQLiteDriver` or the invented `sqlite3.OpenFast`, then `yaml.Marshal` and `yaml.Dump`."
    metrics = grounding_metrics([{"prediction": {"content": answer}, "reference": {"content": ""}}], index)
    assert metrics == {
        "grounded_rate": 0.5,
        "invented_rate": 1.0,
        "mentions": 4,
        "invented": ["sqlite3.OpenFast", "yaml.Dump"],
        "recall": None,  # the reference names no framework API: nothing to recall
        "recall_references": 0,
    }


def test_crlf_and_lint_directives_stay_out_of_docs_and_signatures():
    source = (
        "// Package x is x.\r\npackage x\r\n\r\n// Run runs.\r\n//\r\n// It is fast.\r\n//lint:ignore U1000 kept\r\n"
        "//goland:noinspection GoUnusedExportedFunction\r\n//revive:disable-next-line\r\n"
        "//nolint:errcheck\r\nfunc Run(a int,\r\n\tb int) error { return nil }\r\n"
        "\r\n/*\r\nT is a type.\r\n*/\r\ntype T struct {\r\n\t// Name names.\r\n\tName string\r\n}\r\n"
    )
    parsed = parse_go_file(source.encode(), "x.go", "example.com/x", test_file=False)
    assert parsed.package_doc == "Package x is x."
    symbols = {s.name: s for s in parsed.symbols}
    assert symbols["Run"].doc == "Run runs.\n\nIt is fast."
    assert symbols["Run"].signature == "func Run(a int,\n\tb int) error"
    assert (symbols["T"].doc, symbols["T"].members[0]["doc"]) == ("T is a type.", "Name names.")
    assert not any("\r" in json.dumps(s.to_json()) for s in parsed.symbols)


def test_v1_and_v2_of_a_package_get_distinct_questions_and_one_source_is_read_once(tmp_path, make_config):
    root = tmp_path / "repo"
    write_tree(
        root,
        {
            "go.mod": "module example.com/x\n",
            "x.go": "package x\n\n// New makes a v1 thing.\nfunc New() int { return 1 }\n",
            "v2/go.mod": "module example.com/x/v2\n",
            "v2/x.go": "package x\n\n// New makes a v2 thing.\nfunc New(name string) int { return 2 }\n",
        },
    )
    config = make_config(f"data.sources=[{{url: {root}}}, {{url: {root}/, name: again}}]")
    result = synthesize(config)
    answers: dict[str, set[str]] = {}
    for split in result.dataset.values():
        for row in split:
            messages, _ = conversation(row)
            question = next(m["content"] for m in messages if m["role"] == "user")
            answers.setdefault(question, set()).add(messages[-1]["content"])
    assert all(len(given) == 1 for given in answers.values())  # no question with two answers
    assert any("example.com/x/v2.New" in question for question in answers)
    lines = (config.data.output_dir / SYMBOLS_FILE).read_text().splitlines()
    assert sorted((s["package"], s["name"]) for s in map(json.loads, lines)) == [
        ("example.com/x", "New"),
        ("example.com/x/v2", "New"),
    ]
    assert result.manifest["skipped_files"]["records"] == [f"again: {root}/ is the same source as repo; not read twice"]


def test_source_dot_is_named_after_the_folder(tmp_path):
    root = tmp_path / "shop"
    write_tree(root, {"go.mod": "module example.com/shop\n", "shop.go": FUNC.format(name="shop", func="Buy")})
    (tmp_path / "examples").mkdir()
    sets = [f"data.output_dir={tmp_path / 'out'}", f"data.cache_dir={tmp_path / 'cache'}", "data.sources=[]"]
    sets += [f"data.examples_dir={tmp_path / 'examples'}"]
    config = Path(__file__).parents[1] / "configs" / "training" / "debug.yaml"
    args = [sys.executable, "-m", "trainer.cli", "synthesize", "--config", str(config), "--source", "."]
    args += [arg for item in sets for arg in ("--set", item)]
    done = subprocess.run(args, cwd=root, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [entry["source"] for entry in manifest["sources"]] == ["shop"]
