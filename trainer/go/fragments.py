"""One fenced Go block as a file the compiler can check, wrapped only where that is sound.

- A block with a `package` clause is a file as is. `package main` is renamed (`package main_`, on the same line) so
  that the batch compiles without linking a binary per snippet; a `package main` file without `func main` is then
  reported here with the compiler's own words.
- A block without one is wrapped in `package snippet`: as is when its top level is only declarations (imports
  included), inside `func main() {` … `}` when it holds statements (type, var and const declarations may stand
  there too). A block mixing statements with func, method or import declarations is refused: no wrapper is sound.
  The block's lines keep their numbers after the wrapper's header (`header_lines`), and their columns.
- Imports are added to a wrapped block only for a name it uses as `name.X` without declaring it, when exactly one
  package has that name: a non-internal package of the framework or of the standard library (both from `go list`).
  A name two packages share, or none, refuses the block with the reason: the teacher is asked for a complete file.
- A variable declared at the top level of a statement block may be meant for code the block does not show, so
  `; _ = name` is appended on its declaration's line: the wrapper never turns "declared but not used" into a
  failure. Unused names anywhere else, and unused imports the teacher wrote, stay errors as in a real file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import tree_sitter

from trainer.go.parser import parser, walk

WRAPPED_PACKAGE = "snippet"
LIBRARY_MAIN = "main_"
# Top-level nodes of a block that make it a declarations fragment; the first three cannot stand in a function body.
FILE_ONLY_DECLARATIONS = {"function_declaration", "method_declaration", "import_declaration"}
DECLARATIONS = FILE_ONLY_DECLARATIONS | {"type_declaration", "var_declaration", "const_declaration"}
MIXED_FRAGMENT = (
    "fragment mixes top-level declarations (func, import) with statements: write a complete file with a package "
    "clause, or only statements, or only declarations"
)
FUNC_MAIN = re.compile(r"^func\s+main\s*\(", re.MULTILINE)
# Where an identifier is declared: node type → the field (or child type) that names it.
BINDING_FIELDS = {
    "short_var_declaration": "left",
    "range_clause": "left",
    "receive_statement": "left",
    "var_spec": "name",
    "const_spec": "name",
    "parameter_declaration": "name",
    "variadic_parameter_declaration": "name",
    "function_declaration": "name",
    "type_spec": "name",
    "type_alias": "name",
    "type_switch_statement": "alias",
    "import_spec": "name",
}


@dataclass(frozen=True)
class Prepared:
    source: str  # the file to compile ('' when the block was refused)
    header_lines: int  # lines of wrapper before the block's first line
    problem: str = ""  # why the block fails without compiling it


def _tree(text: str) -> tree_sitter.Tree:
    return parser().parse(text.encode())


def _identifiers(node: tree_sitter.Node) -> list[str]:
    return [n.text.decode() for n in walk(node) if n.type in ("identifier", "type_identifier", "package_identifier")]


def _package_name(import_path: str, names: dict[str, list[str]]) -> str:
    for name, paths in names.items():
        if import_path in paths:
            return name
    last = re.sub(r"/v\d+$", "", import_path).rsplit("/", 1)[-1]
    return re.sub(r"\.v\d+$", "", last).replace("-", "_")


def _bound_and_used(root: tree_sitter.Node, names: dict[str, list[str]]) -> tuple[set[str], list[str]]:
    """The names the block declares (imports included), and the `name` of each `name.X` it uses, in order."""
    bound, used = set(), []
    for node in walk(root):
        field = BINDING_FIELDS.get(node.type)
        for child in node.children_by_field_name(field) if field else []:
            bound.update(_identifiers(child))
        if node.type == "import_spec" and node.child_by_field_name("name") is None:
            path = node.child_by_field_name("path")
            bound.add(_package_name(path.text.decode().strip('"`'), names) if path else "")
        operand = node.child_by_field_name("operand") if node.type == "selector_expression" else None
        operand = node.child_by_field_name("package") if node.type == "qualified_type" else operand
        if operand is not None and operand.type in ("identifier", "package_identifier"):
            used.append(operand.text.decode())
    return bound, list(dict.fromkeys(used))


def _imports(root: tree_sitter.Node, names: dict[str, list[str]], framework: str) -> tuple[list[str], str]:
    """The imports a wrapped block needs, or ('', why it cannot be wrapped)."""
    bound, used = _bound_and_used(root, names)
    imports = []
    for name in used:
        if name in bound:
            continue
        paths = names.get(name, [])
        if len(paths) > 1:
            choices = " or ".join(sorted(paths))
            return [], f"fragment uses `{name}`, which could be {choices}: write a complete file with its imports"
        if not paths:
            return [], (
                f"fragment uses `{name}.`, but declares no `{name}` and no standard-library or {framework} package "
                "has that name: write a complete file with its imports and declarations"
            )
        imports.append(paths[0])
    return imports, ""


def _declared_at(statement: tree_sitter.Node) -> list[str]:
    """The variables a statement declares in its own scope (`x, err := …`, `var a, b T`)."""
    if statement.type == "short_var_declaration":
        return _identifiers(statement.child_by_field_name("left"))
    if statement.type != "var_declaration":
        return []
    specs = [node for node in walk(statement) if node.type == "var_spec"]
    return [name for spec in specs for child in spec.children_by_field_name("name") for name in _identifiers(child)]


def _wrap_statements(snippet: str, header: str) -> str:
    """header + snippet + `}`, with `; _ = name` after each top-level variable declaration (see the module
    docstring)."""
    source = f"{header}{snippet}\n}}\n".encode()
    main = next(n for n in parser().parse(source).root_node.children if n.type == "function_declaration")
    block = main.child_by_field_name("body")
    statements = next((c for c in block.children if c.type == "statement_list"), None) if block else None
    edits = []
    for statement in statements.named_children if statements else []:
        declared = [name for name in _declared_at(statement) if name != "_"]
        if declared:
            edits.append((statement.end_byte, "".join(f"; _ = {name}" for name in declared).encode()))
    for offset, insertion in sorted(edits, reverse=True):
        source = source[:offset] + insertion + source[offset:]
    return source.decode()


def prepare(snippet: str, names: dict[str, list[str]], framework: str) -> Prepared:
    """The file that checks `snippet` (see the module docstring); `names` maps a package name to its import paths."""
    tree = _tree(snippet)
    clause = next((n for n in tree.root_node.children if n.type == "package_clause"), None)
    if clause is not None:
        name = next((c for c in clause.children if c.type == "package_identifier"), None)
        if name is None or name.text != b"main":
            return Prepared(snippet, 0)
        if not FUNC_MAIN.search(snippet):
            line = clause.start_point[0] + 1
            return Prepared("", 0, f"snippet.go:{line}:1: function main is undeclared in the main package")
        data = snippet.encode()
        return Prepared((data[: name.start_byte] + LIBRARY_MAIN.encode() + data[name.end_byte :]).decode(), 0)
    top_level = {node.type for node in tree.root_node.named_children if node.type != "comment"}
    as_statements = bool(top_level - DECLARATIONS)
    if as_statements and top_level & FILE_ONLY_DECLARATIONS:
        return Prepared("", 0, MIXED_FRAGMENT)
    imports, refusal = _imports(tree.root_node, names, framework)
    if refusal:
        return Prepared("", 0, refusal)
    header = f"package {WRAPPED_PACKAGE}\n" + "".join(f'import "{path}"\n' for path in imports)
    if not as_statements:
        return Prepared(header + snippet, header.count("\n"))
    header += "func main() {\n"
    return Prepared(_wrap_statements(snippet, header), header.count("\n"))
