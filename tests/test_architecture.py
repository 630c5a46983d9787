"""The layers of docs/architecture.md hold: shared modules under the stages, no cycle between parts (lazy imports
included), and a command that loads no model imports no model library."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import DEBUG_CONFIG, REPO, debug_overrides, set_args
from tests.scripted_chat import ScriptedTeacher
from trainer.cli import main

PACKAGE = REPO / "trainer"
STAGES = ("synthesis", "training", "evaluation", "export")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every `trainer.*` module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] == "trainer"}


def part_of(module: str) -> str:
    """A stage's modules form one part; `cli` is one; every shared module is a part of its own."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 and pieces[1] in STAGES else module


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = {m for m in imported_modules(path) if m in modules}
        graph.setdefault(part_of(name), set()).update(part_of(t) for t in targets if part_of(t) != part_of(name))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*path, node, target]
            if target not in state and (cycle := visit(target, [*path, node])):
                return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [])):
            return cycle
    return None


def test_parts_form_no_cycle_and_shared_modules_import_no_stage():
    graph = import_graph()
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))
    shared = [part for part in graph if part not in STAGES and part != "trainer.cli"]
    assert {"trainer.config", "trainer.config_file", "trainer.checkpoints", "trainer.dataset"} <= set(shared)
    upward = {part: graph[part] & {*STAGES, "trainer.cli"} for part in shared if graph[part] & {*STAGES, "trainer.cli"}}
    assert upward == {}
    assert all("trainer.cli" not in targets for targets in graph.values())
    # Training may use evaluation's generation for its in-training metrics because evaluation needs no training.
    assert "evaluation" in graph["training"] and "training" not in graph["evaluation"]
    # Reading and compiling Go is shared (trainer/go/): evaluation needs nothing of synthesis.
    assert "synthesis" not in graph["evaluation"]


def test_architecture_md_names_every_shared_module():
    diagram = (REPO / "docs/architecture.md").read_text(encoding="utf-8").split("```")[1]
    listed = set(diagram.split("shared:")[1].replace("·", " ").replace("(never import a stage or the CLI)", "").split())
    shared = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__", "cli"}
    shared |= {f"{path.parent.name}/" for path in PACKAGE.glob("*/__init__.py")} - {f"{stage}/" for stage in STAGES}
    assert shared == listed, "docs/architecture.md's shared list differs from trainer/*.py"


def test_every_headline_metric_is_one_entry_with_its_direction_and_why_it_can_be_null():
    """report.md, the model card, the summary line and eval_gen_* take their headline from one entry per metric: a
    null value is shown with its reason (a missing one raised KeyError there), and a generation headline names a
    path that scoring predictions really writes."""
    from trainer.evaluation.metrics import score_groups
    from trainer.report_format import GENERATION_HEADLINE, HEADLINE, HEADLINES, HELDOUT_HEADLINE, Headline, cell

    answer = {"role": "assistant", "content": "Use `chi.NewRouter()`."}
    scored = score_groups([{"reference": answer, "prediction": answer}], None)
    for key in HEADLINE:
        entry = HEADLINES[key]
        assert isinstance(entry, Headline) and isinstance(entry.lower_is_better, bool), key
        assert entry.nothing_to_measure.strip() and cell({}, key) == f"— ({entry.nothing_to_measure})", key
    for key in GENERATION_HEADLINE:
        parent, _, leaf = key.rpartition(".")
        assert leaf in (scored[parent] if parent else scored), f"{key} is no path of a scored report"
    assert set(HELDOUT_HEADLINE) <= set(GENERATION_HEADLINE)


def test_the_cycle_check_finds_a_cycle_through_a_lazy_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from trainer.training.train import train\n")
    assert imported_modules(module) == {"trainer.training.train", "trainer.training.train.train"}
    graph = import_graph()
    graph["evaluation"] = graph["evaluation"] | {"training"}
    assert find_cycle(graph) is not None


@pytest.mark.slow
def test_scoring_a_predictions_file_imports_no_model_library(tmp_path):
    predictions = tmp_path / "predictions.jsonl"
    record = {"reference": {"role": "assistant", "content": "Use `chi.NewRouter()`."}}
    record["prediction"] = {"role": "assistant", "content": "Call `chi.NewRouter()`."}
    predictions.write_text(json.dumps(record) + "\n")
    probe = (
        "import sys\nfrom trainer.cli import main\n"
        f"code = main(['evaluate', '--predictions', {str(predictions)!r}, '--out', {str(tmp_path / 'eval')!r}])\n"
        "print(code, sorted(m for m in ('torch', 'transformers', 'peft', 'trl', 'datasets') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 []"
    assert json.loads((tmp_path / "eval/report.json").read_text())["n_examples"] == 1


@pytest.mark.slow
def test_scoring_an_endpoint_imports_no_model_library(tmp_path, model_cache):
    """`--endpoint` reads the test split (the `datasets` library) but loads no model: the server renders, tokenizes
    and generates."""
    sets = set_args([*debug_overrides(tmp_path, model_cache), "data.sources=[]"])
    assert main(["synthesize", "--config", str(DEBUG_CONFIG), *sets]) == 0
    server = ScriptedTeacher()  # every answer the same kind of text
    with server.serving() as url:
        args = ["evaluate", "--config", str(DEBUG_CONFIG), *sets, "--endpoint", f"{url}=m", "--limit", "3"]
        probe = (
            f"import sys\nfrom trainer.cli import main\ncode = main({args!r})\n"
            "print(code, sorted(m for m in ('torch', 'transformers', 'peft', 'trl') if m in sys.modules))"
        )
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "0 []"
    assert len(server.requests) == 3 and json.loads((tmp_path / "eval/report.json").read_text())["n_examples"] == 3


def test_checkpoint_folder_prefix_is_the_one_transformers_writes():
    from peft.utils import CONFIG_NAME
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    from trainer.checkpoints.folder import ADAPTER_CONFIG, CHECKPOINT_PREFIX, TRAINER_STATE

    assert (CHECKPOINT_PREFIX, TRAINER_STATE, ADAPTER_CONFIG) == (
        PREFIX_CHECKPOINT_DIR,
        TRAINER_STATE_NAME,
        CONFIG_NAME,
    )
