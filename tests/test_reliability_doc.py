"""docs/reliability.md names a test for every row: each must exist, so the table cannot outlive its tests. That
none of them is skipped is checked by conftest.py, which fails a run where one was."""

import ast
import re

from tests.helpers import RELIABILITY_DOC, REPO, reliability_tests


def test_every_test_named_in_the_reliability_table_exists():
    lines = RELIABILITY_DOC.read_text(encoding="utf-8").splitlines()
    headers = {lines[i - 1] for i, line in enumerate(lines) if line.startswith("|---")}
    rows = [line for line in lines if line.startswith("| ") and line not in headers]
    named = [node_id.split("::") for node_id in reliability_tests()]
    assert len(rows) >= 30 and len(named) >= len(rows)
    unbacked = [row for row in rows if not re.search(r"`tests/test_\w+\.py::test_\w+` *\|$", row)]
    assert unbacked == []
    for path, name in named:
        tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert name in functions, f"docs/reliability.md names {path}::{name}, which does not exist"
