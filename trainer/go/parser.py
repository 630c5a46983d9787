"""Exported API of one Go source file, read with tree-sitter-go (a real parser: generics, groups, comments).

What `go doc` shows is what is extracted: exported funcs, methods on exported types, types (with their exported
fields and interface methods), consts and vars, each with its signature, doc comment and line. `_test.go` files
contribute only their runnable `Example*` functions.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cache

import tree_sitter
import tree_sitter_go

# Comment lines go/doc drops as directives (go/ast's isDirective): `//go:build`, `//lint:ignore`, `//line …`, …
DIRECTIVE = re.compile(r"^(line |extern |export |[a-z0-9]+:[a-z0-9]|nolint)")


class GoSyntaxError(ValueError):
    """The file does not parse as Go; the message names the first line in error."""


@dataclass
class Symbol:
    package: str  # import path
    name: str  # Func | Type | Type.Method
    kind: str  # func | method | type | const | var
    signature: str
    doc: str
    file: str
    line: int
    members: list[dict[str, str]] = field(default_factory=list)  # a type's exported fields or interface methods
    package_name: str = ""  # the `package` clause's name, which need not be the import path's last part
    build: str = ""  # the declaring file's build constraint (file name and //go:build) when it has one

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class GoExample:
    package: str
    target: str  # "" (package), "Func", "Type" or "Type.Method"
    name: str  # the Example function's name
    code: str
    output: str | None
    doc: str
    file: str
    line: int


@dataclass
class ParsedFile:
    package_name: str
    package_doc: str
    symbols: list[Symbol]
    examples: list[GoExample]
    imports_c: bool = False  # a cgo file: go build compiles it only with cgo on
    unreadable: list[int] = field(default_factory=list)  # first error line of each top-level node left out
    # What go/doc needs to show methods promoted from unexported embedded types: exported methods of unexported
    # types, and the types of this package each exported struct embeds (name, embedded as a pointer).
    hidden_methods: list[Symbol] = field(default_factory=list)
    embeds: dict[str, list[tuple[str, bool]]] = field(default_factory=dict)


@cache
def parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_go.language()))


def exported(name: str) -> bool:
    return bool(name) and name[0].isupper()


def _text(node: tree_sitter.Node | None) -> str:
    return node.text.decode("utf-8") if node is not None and node.text is not None else ""


def comment_text(comments: list[tree_sitter.Node]) -> str:
    """The text of `//` and `/* */` comments as `go doc` prints it: markers stripped, directives dropped."""
    lines: list[str] = []
    for node in comments:
        raw = _text(node)
        if raw.startswith("//"):
            body = raw[2:]
            if DIRECTIVE.match(body):
                continue
            lines.append(body[1:] if body.startswith(" ") else body)
        else:
            lines.extend(textwrap.dedent(raw[2:-2]).strip("\n").splitlines())
    return textwrap.dedent("\n".join(lines)).strip()


def documented(parent: tree_sitter.Node) -> list[tuple[tree_sitter.Node, str]]:
    """Each non-comment child of `parent` with its doc comment: the comment block ending on the line right above it.

    One pass over the children (tree-sitter's `prev_sibling` rescans from the parent, which is quadratic on files
    made of thousands of comments). A comment trailing code on the same line starts no block.
    """
    result, block, last_code_row = [], [], -1
    for child in parent.children:
        if child.type == "comment":
            if child.start_point.row == last_code_row:
                continue
            if block and child.start_point.row != block[-1].end_point.row + 1:
                block = []
            block.append(child)
            continue
        adjacent = block and block[-1].end_point.row == child.start_point.row - 1
        result.append((child, comment_text(block) if adjacent else ""))
        block, last_code_row = [], child.end_point.row
    return result


def _receiver_type(method: tree_sitter.Node) -> str:
    receiver = method.child_by_field_name("receiver")
    declaration = (
        next((c for c in receiver.named_children if c.type == "parameter_declaration"), None) if receiver else None
    )
    return _text(strip_pointer(declaration.child_by_field_name("type") if declaration else None))


def strip_pointer(node: tree_sitter.Node | None) -> tree_sitter.Node | None:
    """The named type under pointers, parentheses and type arguments: `*Mux`, `(*Mux)`, `List[T]` → Mux, List."""
    while node is not None and node.type in ("pointer_type", "parenthesized_type", "generic_type"):
        node = node.child_by_field_name("type") or (node.named_children[0] if node.named_children else None)
    return node


def signature_result(signature: str) -> tree_sitter.Node | None:
    """The result of a func or method signature as written in a Symbol (`*Mux`, `(Router, error)`); None for none."""
    tree = parser().parse(f"package p\n{signature}\n".encode())
    kinds = ("function_declaration", "method_declaration")
    declaration = next((n for n in tree.root_node.named_children if n.type in kinds), None)
    return declaration.child_by_field_name("result") if declaration else None


def _signature(declaration: tree_sitter.Node) -> str:
    body = declaration.child_by_field_name("body")
    end = body.start_byte if body is not None else declaration.end_byte
    return declaration.text[: end - declaration.start_byte].decode("utf-8").strip()


def _members(type_node: tree_sitter.Node) -> tuple[list[dict[str, str]], list[str]]:
    """Exported fields (struct) or methods and embedded types (interface), and their source lines."""
    members: list[dict[str, str]] = []
    lines: list[str] = []
    hidden = False
    if type_node.type == "struct_type":
        field_list = next((c for c in type_node.named_children if c.type == "field_declaration_list"), None)
        for item, doc in documented(field_list) if field_list else []:
            if item.type != "field_declaration":
                continue
            names = [_text(n) for n in item.children_by_field_name("name")]
            type_text = _text(item.child_by_field_name("type"))
            shown = [n for n in names if exported(n)] if names else []
            embedded_name = type_text.lstrip("*").split(".")[-1].split("[")[0]
            if (names and not shown) or (not names and not exported(embedded_name)):
                hidden = True
                continue
            tag = item.child_by_field_name("tag")
            line = (", ".join(shown) + " " if shown else "") + type_text + (" " + _text(tag) if tag else "")
            lines.append(line)
            members.append({"name": ", ".join(shown) or embedded_name, "type": type_text, "doc": doc})
    else:  # interface_type
        for item, doc in documented(type_node):
            if item.type == "method_elem":
                name = _text(item.child_by_field_name("name"))
                if not exported(name):
                    hidden = True
                    continue
                signature = _text(item)
                lines.append(signature)
                members.append({"name": name, "type": signature, "doc": doc})
            elif item.type == "type_elem":
                lines.append(_text(item))
    if hidden:
        lines.append(
            "// contains filtered or unexported " + ("fields" if type_node.type == "struct_type" else "methods")
        )
    return members, lines


def _local_embeds(type_node: tree_sitter.Node | None) -> list[tuple[str, bool]]:
    """A struct's embedded fields whose type is declared in the same package: (type name, embedded as a pointer)."""
    if type_node is None or type_node.type != "struct_type":
        return []
    field_list = next((c for c in type_node.named_children if c.type == "field_declaration_list"), None)
    found = []
    for item in field_list.named_children if field_list else []:
        if item.type != "field_declaration" or item.child_by_field_name("name") is not None:
            continue
        node = item.child_by_field_name("type")
        pointer = any(child.type == "*" for child in item.children)  # tree-sitter keeps `*T`'s star outside the type
        while node is not None and node.type in ("pointer_type", "generic_type"):
            node = node.child_by_field_name("type") or (node.named_children[0] if node.named_children else None)
        if node is not None and node.type == "type_identifier":
            found.append((_text(node), pointer))
    return found


def _type_symbol(spec: tree_sitter.Node, doc: str, package: str, path: str) -> Symbol:
    name = _text(spec.child_by_field_name("name"))
    params = _text(spec.child_by_field_name("type_parameters"))
    type_node = spec.child_by_field_name("type")
    members: list[dict[str, str]] = []
    if spec.type == "type_alias":
        body = "= " + _text(type_node)
    elif type_node is not None and type_node.type in ("struct_type", "interface_type"):
        members, lines = _members(type_node)
        keyword = "struct" if type_node.type == "struct_type" else "interface"
        body = keyword + (" {\n" + "".join(f"\t{line}\n" for line in lines) + "}" if lines else "{}")
    else:
        body = _text(type_node)
    return Symbol(package, name, "type", f"type {name}{params} {body}", doc, path, spec.start_point.row + 1, members)


def _specs(declaration: tree_sitter.Node, group_doc: str, kinds: tuple[str, ...]) -> list[tuple[tree_sitter.Node, str]]:
    """Specs of a declaration, grouped `( … )` or not, with their docs (tree-sitter nests var groups deeper).

    Go's rule: a spec's own comment, else the declaration's comment when the group has only this spec.
    """
    found = []
    for child, doc in documented(declaration):
        if child.type in kinds:
            found.append((child, doc))
        elif child.type.endswith("_list"):
            found.extend((spec, spec_doc) for spec, spec_doc in documented(child) if spec.type in kinds)
    if len(found) == 1 and not found[0][1]:
        return [(found[0][0], group_doc)]
    return found


def _value_symbols(declaration: tree_sitter.Node, kind: str, doc: str, package: str, path: str) -> list[Symbol]:
    symbols = []
    for spec, spec_doc in _specs(declaration, doc, (f"{kind}_spec",)):
        for name_node in spec.children_by_field_name("name"):
            name = _text(name_node)
            if exported(name):
                signature = f"{kind} {' '.join(_text(spec).split())}"
                symbols.append(Symbol(package, name, kind, signature, spec_doc, path, spec.start_point.row + 1))
    return symbols


def _example(function: tree_sitter.Node, doc: str, package: str, path: str) -> GoExample | None:
    name = _text(function.child_by_field_name("name"))
    params = function.child_by_field_name("parameters")
    body = function.child_by_field_name("body")
    if not (name == "Example" or name.startswith("Example")) or body is None or (params and params.named_children):
        return None
    rest = name.removeprefix("Example").lstrip("_")
    if rest and not name.startswith("Example_") and not exported(rest):
        return None  # `Examples`, `Exampled`: not an example function
    # Example, Example_suffix, ExampleF, ExampleF_suffix, ExampleT_M, ExampleT_M_suffix (suffix starts lower-case).
    parts = [p for p in rest.split("_") if p] if not name.startswith("Example_") else []
    target_parts = [p for p in parts if exported(p)][:2]
    inner = body.text[1:-1].decode("utf-8")
    output = None
    marker = re.search(r"^[ \t]*//[ \t]*(Unordered output|Output):[ \t]*", inner, re.MULTILINE | re.IGNORECASE)
    if marker:
        tail = inner[marker.end() :]
        output = "\n".join(re.sub(r"^[ \t]*// ?", "", line) for line in tail.splitlines()).strip()
        inner = inner[: marker.start()]
    code = textwrap.dedent(inner).strip("\n").rstrip()
    return GoExample(package, ".".join(target_parts), name, code, output, doc, path, function.start_point.row + 1)


def parse_go_file(source: bytes, path: str, package: str, *, test_file: bool) -> ParsedFile:
    """Symbols (or, for `_test.go` files, Example functions) of one file. `package` is the import path."""
    # Go drops carriage returns from comments and raw strings; without this every CRLF file's docs end in "\r".
    tree = parser().parse(source.replace(b"\r\n", b"\n"))
    children, unreadable = _readable(documented(tree.root_node))
    clause, clause_doc = next(((c, d) for c, d in children if c.type == "package_clause"), (None, ""))
    if clause is None:
        raise GoSyntaxError(f"syntax error near line {unreadable[0]}" if unreadable else "no package clause")
    package_name = sys.intern(_text(next((c for c in clause.named_children if c.type == "package_identifier"), None)))
    result = ParsedFile(package_name, clause_doc, [], [], unreadable=unreadable)
    for node, doc in children:
        if node.type == "import_declaration":
            result.imports_c |= any(_text(spec) == '"C"' for spec in _import_paths(node))
        if test_file:
            if node.type == "function_declaration" and (example := _example(node, doc, package, path)) is not None:
                result.examples.append(example)
            continue
        line = node.start_point.row + 1
        if node.type == "function_declaration":
            name = _text(node.child_by_field_name("name"))
            if exported(name):
                result.symbols.append(Symbol(package, name, "func", _signature(node), doc, path, line))
        elif node.type == "method_declaration":
            name, receiver = _text(node.child_by_field_name("name")), _receiver_type(node)
            if exported(name):
                method = Symbol(package, f"{receiver}.{name}", "method", _signature(node), doc, path, line)
                (result.symbols if exported(receiver) else result.hidden_methods).append(method)
        elif node.type == "type_declaration":
            for spec, spec_doc in _specs(node, doc, ("type_spec", "type_alias")):
                if exported(type_name := _text(spec.child_by_field_name("name"))):
                    result.symbols.append(_type_symbol(spec, spec_doc, package, path))
                    if embeds := _local_embeds(spec.child_by_field_name("type")):
                        result.embeds[type_name] = embeds
        elif node.type in ("const_declaration", "var_declaration"):
            result.symbols.extend(_value_symbols(node, node.type.split("_")[0], doc, package, path))
    for symbol in result.symbols:
        symbol.package_name = package_name
    return result


def _import_paths(declaration: tree_sitter.Node) -> list[tree_sitter.Node]:
    specs = [c for c in declaration.named_children if c.type == "import_spec"]
    for group in (c for c in declaration.named_children if c.type == "import_spec_list"):
        specs.extend(c for c in group.named_children if c.type == "import_spec")
    return [path for spec in specs if (path := spec.child_by_field_name("path")) is not None]


def _readable(children: list[tuple[tree_sitter.Node, str]]) -> tuple[list[tuple[tree_sitter.Node, str]], list[int]]:
    """The top-level nodes tree-sitter read whole, and the line of the first error in each one it did not.

    A syntax error costs only the declaration it is in, not the file. A node flagged with an error that holds no
    ERROR or missing node is whole (tree-sitter flags `const ( A = iota; B; C )` on one line, yet reads it right).
    """
    kept, unreadable = [], []
    for node, doc in children:
        error = _first_error(node) if node.has_error else None
        if error is None:
            kept.append((node, doc))
        else:
            unreadable.append(error.start_point.row + 1)
    return kept, unreadable


def walk(root: tree_sitter.Node) -> Iterator[tree_sitter.Node]:
    """`root` and every node under it, depth first in source order, without recursion: hostile nesting (a chain of
    600 calls, 1,200 parentheses) cannot overflow the stack."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def _first_error(root: tree_sitter.Node) -> tree_sitter.Node | None:
    """The first ERROR or missing node."""
    return next((node for node in walk(root) if node.type == "ERROR" or node.is_missing), None)
