"""Usage of the framework's API in its own code, as the trimmed snippets a how-to answer shows.

The authors' own code already uses the API correctly: `_test.go` files (Example functions included), example
programs (`package main` folders, and `_`-prefixed folders such as chi's `_examples/`, which the go tool and the API
index skip), code blocks of doc comments and of the markdown docs. These are read for usage only: the API index stays
what `go build` compiles (go_repo.py).

Per function, tree-sitter finds each framework symbol the code names: `alias.Name` through the file's imports,
`v.Method` where `v`'s type is known from a parameter (`c *gin.Context`), a constructor's result
(`r := chi.NewRouter()` is a `*chi.Mux`) or a composite literal, following embedded types one level
(`gin.Engine.GET` is `RouterGroup.GET`), and, in the framework's own (internal) tests, its unqualified names, which
the snippet qualifies as a user writes them (`NewRouter()` → `chi.NewRouter()`). `go_slice.py` trims the function to
what the use needs. Each snippet keeps its provenance (file, line, where it came from); only those that pass the
compile check (go_check.py) become conversations.
"""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import tree_sitter

from trainer.data_config import GenerationSettings
from trainer.errors import TrainerError
from trainer.files import walk
from trainer.go.check import CheckTarget, check_snippets
from trainer.go.parser import Symbol, exported, parser, signature_result, strip_pointer
from trainer.go.repo import RepoIndex, declared_module, package_path, read_source
from trainer.go.slice import Reference, slice_use

MAX_DEPTH = 200  # nesting the resolver follows; deeper code (generated, hostile) is not read for usage
CODE_LINE = re.compile(r"^(\s+\S.*|\s*)$")  # a go/doc code block's line (indented) or a blank one
TARGET_KINDS = ("func", "method", "var", "const")  # what a usage conversation is about (types are named in passing)


@dataclass(frozen=True)
class UsageSnippet:
    key: str  # import/path.Name of the symbol it shows in use
    code: str
    file: str
    line: int
    origin: str  # "example program", "example function", "test", "doc comment", "markdown"


@dataclass
class UsageSources:
    snippets: list[UsageSnippet] = field(default_factory=list)
    files: int = 0
    problems: list[str] = field(default_factory=list)  # "path: reason", files that could not be read


class Api:
    """The index as the resolver needs it: symbols by key, package names, and result types of funcs and methods."""

    def __init__(self, index: RepoIndex, short: dict[str, str]) -> None:
        self.symbols = {f"{s.package}.{s.name}": s for s in index.symbols}
        self.short = short  # import path → how answers name the package
        self.package_names = {package: info["name"] for package, info in index.packages.items()}
        names: dict[str, list[str]] = {}
        for package, name in self.package_names.items():
            names.setdefault(name, []).append(package)
        self.by_name = {name: paths[0] for name, paths in names.items() if len(paths) == 1}
        self._results: dict[str, str | None] = {}

    def type_key(self, package: str, name: str) -> str | None:
        key = f"{package}.{name}"
        symbol = self.symbols.get(key)
        return key if symbol is not None and symbol.kind == "type" else None

    def method(self, type_key: str | None, name: str, depth: int = 0) -> str | None:
        """`T.Name`'s key, or the method of a type T embeds (one level down, as Go promotes it)."""
        if type_key is None or depth > 1:
            return None
        if f"{type_key}.{name}" in self.symbols:
            return f"{type_key}.{name}"
        owner = self.symbols[type_key]
        for member in owner.members:
            embedded = member["type"].lstrip("*")
            inner = self._named_type(embedded, owner.package) if member["name"] == embedded.split(".")[-1] else None
            if found := self.method(inner, name, depth + 1):
                return found
        return None

    def _named_type(self, spelled: str, package: str) -> str | None:
        """A type as the framework's own code spells it (`Mux`, `chi.Router`) → its key."""
        qualifier, _, name = spelled.rpartition(".")
        home = self.by_name.get(qualifier) if qualifier else package
        return self.type_key(home, name) if home else None

    def result_type(self, key: str) -> str | None:
        """The framework type a func or method returns first (`*Mux` → chi.Mux), from its signature."""
        if key not in self._results:
            symbol = self.symbols.get(key)
            self._results[key] = self._parse_result(symbol) if symbol and symbol.kind in ("func", "method") else None
        return self._results[key]

    def _parse_result(self, symbol: Symbol) -> str | None:
        result = signature_result(symbol.signature)
        if result is not None and result.type == "parameter_list":
            first = next((c for c in result.named_children if c.type == "parameter_declaration"), None)
            result = first.child_by_field_name("type") if first else None
        node = strip_pointer(result)
        if node is None:
            return None
        if node.type == "type_identifier":
            return self.type_key(symbol.package, _text(node))
        if node.type == "qualified_type" and (path := self.by_name.get(_text(node.child_by_field_name("package")))):
            return self.type_key(path, _text(node.child_by_field_name("name")))
        return None


@dataclass
class _Code:
    """One piece of code read for usage: its imports and, for the framework's own tests, its home package."""

    api: Api
    aliases: dict[str, str]  # local package name → framework import path
    home: str | None  # the framework package whose unqualified names this code uses
    refs: list[Reference] = field(default_factory=list)


def _text(node: tree_sitter.Node | None) -> str:
    return node.text.decode("utf-8") if node is not None and node.text is not None else ""


def _type_of(node: tree_sitter.Node | None, code: _Code) -> str | None:
    node = strip_pointer(node)
    if node is None:
        return None
    if node.type == "type_identifier" and code.home:
        return code.api.type_key(code.home, _text(node))
    if node.type == "qualified_type" and (path := code.aliases.get(_text(node.child_by_field_name("package")))):
        return code.api.type_key(path, _text(node.child_by_field_name("name")))
    return None


def _expression_type(node: tree_sitter.Node, code: _Code, scope: dict[str, str | None]) -> str | None:
    if node.type == "identifier":
        return scope.get(_text(node))
    if node.type in ("unary_expression", "parenthesized_expression"):
        inner = node.child_by_field_name("operand") or (node.named_children[0] if node.named_children else None)
        return _expression_type(inner, code, scope) if inner is not None else None
    if node.type == "composite_literal":
        return _type_of(node.child_by_field_name("type"), code)
    if node.type == "call_expression":
        key = _symbol_at(node.child_by_field_name("function"), code, scope)
        return code.api.result_type(key) if key else None
    return None


def _symbol_at(node: tree_sitter.Node | None, code: _Code, scope: dict[str, str | None]) -> str | None:
    """The framework symbol an identifier or selector names, if any."""
    if node is None:
        return None
    if node.type == "identifier" and code.home and _text(node) not in scope and exported(_text(node)):
        key = f"{code.home}.{_text(node)}"
        symbol = code.api.symbols.get(key)
        return key if symbol is not None and symbol.kind != "method" else None
    if node.type != "selector_expression":
        return None
    operand, name = node.child_by_field_name("operand"), _text(node.child_by_field_name("field"))
    if operand is not None and operand.type == "identifier" and _text(operand) not in scope:
        path = code.aliases.get(_text(operand))
        return f"{path}.{name}" if path and f"{path}.{name}" in code.api.symbols else None
    return code.api.method(_expression_type(operand, code, scope), name) if operand is not None else None


def _declare(names: list[tree_sitter.Node], types: list[str | None], scope: dict[str, str | None]) -> None:
    for index, name in enumerate(names):
        scope[_text(name)] = types[index] if index < len(types) else None


def _resolve(node: tree_sitter.Node, scope: dict[str, str | None], code: _Code, depth: int = 0) -> None:
    """Records in `code.refs` every framework symbol the code under `node` names, with Go's scoping of locals."""
    if depth > MAX_DEPTH:
        return
    kind = node.type
    if kind in ("func_literal", "function_declaration", "method_declaration"):
        inner = dict(scope)
        for part in ("receiver", "parameters"):
            for declaration in p.named_children if (p := node.child_by_field_name(part)) else []:
                if declaration.type in ("parameter_declaration", "variadic_parameter_declaration"):
                    type_node = declaration.child_by_field_name("type")
                    if type_node is not None:
                        _resolve(type_node, scope, code, depth + 1)
                    names = declaration.children_by_field_name("name")
                    _declare(names, [_type_of(type_node, code)] * len(names), inner)
        if (body := node.child_by_field_name("body")) is not None:
            _resolve(body, inner, code, depth + 1)
        return
    if kind == "block":
        scope = dict(scope)
    elif kind == "short_var_declaration":
        right = node.child_by_field_name("right")
        values = right.named_children if right is not None else []
        for value in values:
            _resolve(value, scope, code, depth + 1)
        names = left.named_children if (left := node.child_by_field_name("left")) is not None else []
        types = [_expression_type(v, code, scope) for v in values] if len(values) == len(names) else []
        _declare(names, types, scope)
        return
    elif kind == "var_spec":
        value, type_node = node.child_by_field_name("value"), node.child_by_field_name("type")
        for child in (type_node, value):
            if child is not None:
                _resolve(child, scope, code, depth + 1)
        values = value.named_children if value is not None else []
        names = node.children_by_field_name("name")
        declared = _type_of(type_node, code)
        types = [declared] * len(names) if declared else [_expression_type(v, code, scope) for v in values]
        _declare(names, types, scope)
        return
    elif kind == "selector_expression":
        if key := _symbol_at(node, code, scope):
            code.refs.append(Reference(key, node, None))
    elif kind == "qualified_type":
        if key := _type_of(node, code):
            code.refs.append(Reference(key, node, None))
        return
    elif kind in ("identifier", "type_identifier") and code.home and _text(node) not in scope:
        key = f"{code.home}.{_text(node)}"
        symbol = code.api.symbols.get(key)
        if exported(_text(node)) and symbol is not None and symbol.kind != "method":
            code.refs.append(Reference(key, node, code.api.short[code.home]))
        return
    for child in node.named_children:
        _resolve(child, scope, code, depth + 1)


def _imports(root: tree_sitter.Node, api: Api) -> dict[str, str]:
    """Local name → framework import path, from a file's import declarations."""
    aliases = {}
    for spec in (n for n in root.named_children if n.type == "import_declaration" for n in _import_specs(n)):
        path = _text(spec.child_by_field_name("path")).strip('"`')
        if path not in api.short:
            continue
        name = spec.child_by_field_name("name")
        # Unaliased, the local name is the package clause's, which two indexed packages may share.
        local = _text(name) if name is not None else api.package_names[path]
        if local not in ("_", "."):
            aliases[local] = path
    return aliases


def _import_specs(declaration: tree_sitter.Node) -> list[tree_sitter.Node]:
    specs = [c for c in declaration.named_children if c.type == "import_spec"]
    for group in (c for c in declaration.named_children if c.type == "import_spec_list"):
        specs.extend(c for c in group.named_children if c.type == "import_spec")
    return specs


def _uses(source: bytes, code: _Code, file: str, line_offset: int, origin: str) -> list[UsageSnippet]:
    """One snippet per (function, framework symbol it uses), trimmed around the symbol's first use there."""
    tree = parser().parse(source)
    code.aliases = code.aliases or _imports(tree.root_node, code.api)
    found = []
    for function in tree.root_node.named_children:
        if function.type not in ("function_declaration", "method_declaration") or function.has_error:
            continue
        code.refs = []
        _resolve(function, {}, code)
        first: dict[str, Reference] = {}
        for ref in code.refs:
            first.setdefault(ref.key, ref)
        name = _text(function.child_by_field_name("name"))
        kind = "example function" if name.startswith("Example") and origin == "test" else origin
        for key, ref in first.items():
            if code.api.symbols[key].kind in TARGET_KINDS:
                snippet = slice_use(source, function, ref, code.refs)
                if snippet is not None:
                    line = ref.node.start_point.row + 1 - line_offset
                    found.append(UsageSnippet(key, snippet, file, line, kind))
    return found


def _fragment(text: str, api: Api, file: str, line: int, origin: str) -> list[UsageSnippet]:
    """A code block of a doc comment or a markdown file: a whole file, or statements read as a function's body."""
    if re.search(r"^package\s+\w+", text, re.MULTILINE):
        source, offset = text, 0
    else:
        source, offset = f"package p\n\nfunc main() {{\n{text}\n}}\n", 3
    code = _Code(api, dict(api.by_name), None)
    if parser().parse(source.encode()).root_node.has_error:
        return []
    return [
        UsageSnippet(s.key, s.code, file, line + max(0, s.line - 1), origin)
        for s in _uses(source.encode(), code, file, offset, origin)
    ]


def doc_code_blocks(doc: str) -> list[str]:
    """The code blocks of a Go doc comment: runs of indented lines (go/doc's rule), dedented."""
    blocks, run = [], []
    for line in [*doc.splitlines(), "end"]:
        if CODE_LINE.match(line) and (line.strip() or run):
            run.append(line)
            continue
        if sum(1 for item in run if item.strip()) >= 2:
            blocks.append(textwrap.dedent("\n".join(run)).strip("\n"))
        run = []
    return blocks


def _usage_folder(relative: str, name: str, settings: GenerationSettings) -> str | None:
    if name.startswith(".") or name in ("vendor", "testdata") or (name == "internal" and not settings.include_internal):
        return "not read for usage"
    return None


def read_usage(root: Path, index: RepoIndex, short: dict[str, str], settings: GenerationSettings) -> UsageSources:
    """Every snippet of framework usage in the repository's tests, example programs and docs (see the module doc)."""
    api, result = Api(index, short), UsageSources()
    modules: dict[str, str] = {}

    def folder(relative: str, name: str) -> str | None:
        reason = _usage_folder(relative, name, settings)
        if reason is None and (declared := declared_module(root / relative)):
            modules[relative] = declared
        return reason

    walked = walk(root, folder, lambda relative: relative.endswith(".go"))
    for relative in walked.files:
        data, problem = read_source(root / relative, int(settings.max_file_bytes))
        if data is None:
            result.problems.append(f"{relative}: {problem}")
            continue
        tree = parser().parse(data)
        clause = next((c for c in tree.root_node.named_children if c.type == "package_clause"), None)
        name = _text(clause.named_children[0]) if clause is not None and clause.named_children else ""
        package = package_path(PurePosixPath(relative).parent.as_posix(), index.import_path, modules)
        hidden = any(part.startswith("_") for part in PurePosixPath(relative).parts[:-1])
        if relative.endswith("_test.go"):
            origin = "test"
        elif name == "main" or hidden:
            origin = "example program"
        else:
            continue  # the framework's own implementation: its API, indexed by go_repo, not usage
        result.files += 1
        home = package if index.packages.get(package, {}).get("name") == name else None
        result.snippets.extend(_uses(data, _Code(api, {}, home), relative, 0, origin))
    for symbol in index.symbols:
        for block in doc_code_blocks(symbol.doc):
            result.snippets.extend(_fragment(block, api, symbol.file, symbol.line, "doc comment"))
    for package, info in index.packages.items():
        for block in doc_code_blocks(info["doc"]):
            result.snippets.extend(_fragment(block, api, package, 0, "doc comment"))
    for section in index.sections:
        for block in section.code:
            result.snippets.extend(_fragment(block, api, section.file, section.line, "markdown"))
    result.problems.extend(walked.problems)
    return result


@dataclass
class CheckedUses:
    """The compiled uses of each symbol (by key, best first) and the manifest's `usage` figures for one source."""

    by_key: dict[str, list[UsageSnippet]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)


def _rank(snippet: UsageSnippet) -> tuple[int, int]:
    """Example programs, Example functions and docs before tests (written to be read), then the shorter."""
    return (snippet.origin == "test", snippet.code.count("\n"))


def checked_uses(
    root: Path, index: RepoIndex, settings: GenerationSettings, target: CheckTarget, work_dir: Path
) -> CheckedUses:
    """Each symbol's usage snippets that build against the framework: the `usage_candidates` best distinct ones per
    symbol go through the compile check (go_check.py) in one call. Without a Go toolchain (or with a framework that
    does not build here) there are none, and the figures say why."""
    found = read_usage(root, index, index.short_names(), settings)
    candidates: dict[str, list[UsageSnippet]] = {}
    for snippet in sorted(found.snippets, key=_rank):
        chosen = candidates.setdefault(snippet.key, [])
        if len(chosen) < settings.usage_candidates and all(c.code != snippet.code for c in chosen):
            chosen.append(snippet)
    flat = [snippet for chosen in candidates.values() for snippet in chosen]
    figures: dict[str, Any] = {"files": found.files, "snippets": len(found.snippets), "checked": len(flat)}
    try:
        results = check_snippets([snippet.code for snippet in flat], target, work_dir)
    except TrainerError as exc:
        return CheckedUses({}, figures | {"passed": 0, "not_checked": str(exc)})
    result = CheckedUses()
    for snippet, verdict in zip(flat, results, strict=True):
        if verdict.ok:
            result.by_key.setdefault(snippet.key, []).append(snippet)
    passed = [s for chosen in result.by_key.values() for s in chosen]
    result.figures = figures | {
        "passed": len(passed),
        "pass_rate": round(len(passed) / max(1, len(flat)), 3),
        "symbols": len(result.by_key),
        "by_origin": dict(Counter(s.origin for s in passed)),
        "not_read": found.problems,  # folders passed over (vendor, testdata, dot-folders) and unusable files
    }
    return result
