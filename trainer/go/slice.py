"""A function trimmed to one use of an API: the statement that uses it and what that statement needs.

From the use outwards, block by block: in the innermost statement list the statement holding the use is kept, with
the earlier statements declaring names it reads (transitively) and, below the function's top level, the later ones
reading names it declares (a nested `id := chi.URLParam(r, "id")` keeps the line that uses `id`, or Go would refuse
the declared-and-unused `id`). Each enclosing statement is kept with only these inside it, up to the function's body.
The result is the kept top-level statements, dedented, or, where they read the function's parameters (a handler's
`w`, `r`), the function declaration around them. Comments right above a kept statement stay. Unqualified names of
the framework's own (internal) tests get their package (`chi.`) as a user writes them.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import tree_sitter

from trainer.go.parser import walk

MAX_LINES = 30  # a longer trimmed use is not a how-to answer


@dataclass(frozen=True)
class Reference:
    key: str  # the framework symbol's import/path.Name
    node: tree_sitter.Node
    qualifier: str | None  # the package name to write before an unqualified name, else None


def _identifiers(node: tree_sitter.Node) -> set[str]:
    return {n.text.decode() for n in walk(node) if n.type in ("identifier", "type_identifier")}


def _declares(statement: tree_sitter.Node) -> set[str]:
    if statement.type == "short_var_declaration":
        left = statement.child_by_field_name("left")
        return {n.text.decode() for n in left.named_children if n.type == "identifier"} if left else set()
    if statement.type in ("var_declaration", "const_declaration", "type_declaration"):
        specs = (n for n in walk(statement) if n.type in ("var_spec", "const_spec", "type_spec", "type_alias"))
        return {name.text.decode() for spec in specs for name in spec.children_by_field_name("name")}
    return set()


def _statements(statement_list: tree_sitter.Node) -> list[tree_sitter.Node]:
    return [child for child in statement_list.named_children if child.type != "comment"]


def _close(statements: list[tree_sitter.Node], kept: set[int], forward: bool) -> set[int]:
    """The indices of `statements` to keep: `kept` with the declarations they read (and, `forward`, the statements
    reading what they declare), until nothing changes."""
    reads = [_identifiers(s) for s in statements]
    declares = [_declares(s) for s in statements]
    changed = True
    while changed:
        changed = False
        for index in range(len(statements)):
            if index in kept:
                continue
            needed = any(declares[index] & reads[k] for k in kept if k > index)
            read = forward and any(reads[index] & declares[k] for k in kept if k < index)
            if needed or read:
                kept.add(index)
                changed = True
    return kept


def _first_reader(statements: list[tree_sitter.Node], target: int) -> set[int]:
    """The first later statement reading a name the target declares (`r := chi.NewRouter()` → `r.Get(…)`): at the
    top level, where Go does not refuse an unused name (the compile check's wrapper marks it used), one is enough."""
    declared = _declares(statements[target])
    simple = ("expression_statement", "short_var_declaration", "assignment_statement")  # not an `if` and its body
    later = (
        i
        for i in range(target + 1, len(statements))
        if statements[i].type in simple and declared & _identifiers(statements[i])
    )
    return {found} if (found := next(later, None)) is not None else set()


def _line_span(source: bytes, start: int, end: int) -> tuple[int, int]:
    """`start`..`end` widened to whole lines where nothing else is on them."""
    line_start = source.rfind(b"\n", 0, start) + 1
    line_end = source.find(b"\n", end)
    line_end = len(source) if line_end < 0 else line_end + 1
    before, after = source[line_start:start], source[end:line_end]
    if before.strip() == b"" and after.strip() == b"":
        return line_start, line_end
    return start, end


def slice_use(source: bytes, function: tree_sitter.Node, use: Reference, refs: list[Reference]) -> str | None:
    """The trimmed code around `use` inside `function` (see the module doc); None where it is over MAX_LINES."""
    body = function.child_by_field_name("body")
    chain: list[tuple[tree_sitter.Node, tree_sitter.Node]] = []  # (statement list, statement), innermost first
    node = use.node
    while node.parent is not None and node != body:
        if node.parent.type == "statement_list":
            chain.append((node.parent, node))
        node = node.parent
    if body is None or not chain:
        return None
    cuts: list[tuple[int, int]] = []
    top: list[tree_sitter.Node] = []
    parameters = function.child_by_field_name("parameters")
    parameter_names = _identifiers(parameters) if parameters is not None else set()
    for depth, (statement_list, statement) in enumerate(chain):
        statements = _statements(statement_list)
        outermost = depth == len(chain) - 1
        target = statements.index(statement)
        kept = _close(statements, {target}, forward=not outermost)
        if outermost:
            kept = _close(statements, kept | _first_reader(statements, target), forward=False)
            top = [s for i, s in enumerate(statements) if i in kept]
            break
        for index, other in enumerate(statements):
            if index not in kept:
                cuts.append(_line_span(source, *_with_comments(other)))
    used = set().union(*(_identifiers(s) for s in top))
    as_function = bool(used & parameter_names) or function.type == "method_declaration"
    inserts = {ref.node.start_byte: f"{ref.qualifier}." for ref in refs if ref.qualifier}
    pieces = []
    for statement in top:
        start, end = _with_comments(statement)
        start = source.rfind(b"\n", 0, start) + 1
        pieces.append(_render(source, start, end, cuts, inserts))
    code = textwrap.dedent("\n".join(pieces)).strip("\n")
    if as_function:
        header = _render(source, function.start_byte, body.start_byte, [], inserts).rstrip()
        code = f"{header} {{\n{textwrap.indent(code, chr(9))}\n}}"
    return code if code.count("\n") < MAX_LINES else None


def _with_comments(statement: tree_sitter.Node) -> tuple[int, int]:
    """A statement's bytes with the comment lines right above it."""
    start, sibling = statement.start_byte, statement.prev_sibling
    row = statement.start_point.row
    while sibling is not None and sibling.type == "comment" and sibling.end_point.row == row - 1:
        start, row, sibling = sibling.start_byte, sibling.start_point.row, sibling.prev_sibling
    return start, statement.end_byte


def _render(source: bytes, start: int, end: int, cuts: list[tuple[int, int]], inserts: dict[int, str]) -> str:
    """source[start:end] without the cut ranges, with the inserts (qualifiers) at their offsets."""
    out, at = [], start
    events = sorted([(s, e, "") for s, e in cuts] + [(p, p, text) for p, text in inserts.items()])
    for cut_start, cut_end, text in events:
        if cut_start < at or cut_start > end:
            continue
        out.append(source[at:cut_start].decode("utf-8", "replace") + text)
        at = max(at, cut_end)
    out.append(source[at:end].decode("utf-8", "replace"))
    return "".join(out)
