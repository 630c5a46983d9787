"""The framework's API as the pipeline checks text against it: `symbols.jsonl` read into a `SymbolIndex` (which names
a text presents as the framework's, and whether each exists), and the fenced Go blocks of a text.

Shared by evaluation (API grounding of answers) and synthesis (a teacher's conversation that invents an API is
dropped), so both judge a name the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trainer.dataset import SYMBOLS_FILE
from trainer.errors import TrainerError

GO_FENCE = re.compile(r"```(?:go|golang)[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
QUALIFIED = re.compile(r"\b([A-Za-z_]\w*)\.([A-Z]\w*)(?:\.([A-Z]\w*))?")
BARE_CALL = re.compile(r"(?<![.\w])([A-Z]\w*)\(")
CODE_FENCE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)  # any fenced block; an unclosed one runs to the end
DOC_LINK = re.compile(r"\[([A-Za-z_][\w.]*)\]")  # Go doc links: [Name], [Type.Method], [pkg.Name]
CODE_NAME = re.compile(r"(?<![.\w])([A-Z]\w*(?:\.[A-Z]\w*)?)")  # Name or Type.Method not after a `.`
DECLARED = re.compile(r"(\bfunc\s*(?:\([^)]*\)\s*)?)[A-Z]\w*")  # a declared func or method name: not a reference


def go_blocks(text: str) -> list[str]:
    """The bodies of the text's fenced ```go blocks, in order."""
    return GO_FENCE.findall(text)


class SymbolIndex:
    """The framework's exported API from symbols.jsonl: package short names, and names per package."""

    def __init__(self, symbols: Iterable[dict[str, Any]]):
        self.by_package: dict[str, set[str]] = {}
        self.types: set[str] = set()
        self.keys: dict[str, set[str]] = {}  # `short.Name` and bare `Name` → the `import/path.Name` keys they name
        self.all_keys: set[str] = set()
        for symbol in symbols:
            # The package clause's name (go-sqlite3 is `sqlite3`, gopkg.in/yaml.v3 is `yaml`); indexes written before
            # it was recorded fall back to the import path's last part.
            short = symbol.get("package_name") or re.sub(r"/v\d+$", "", symbol["package"]).rsplit("/", 1)[-1]
            self.by_package.setdefault(short, set()).add(symbol["name"])
            # A type's fields and interface methods are its API too (`LogFormatter.NewLogEntry`), though not symbols.
            self.by_package[short].update(f"{symbol['name']}.{m['name']}" for m in symbol.get("members") or ())
            if symbol["kind"] == "type":
                self.types.add(symbol["name"])
            key = f"{symbol['package']}.{symbol['name']}"
            self.all_keys.add(key)
            for spelled in (f"{short}.{symbol['name']}", symbol["name"]):
                self.keys.setdefault(spelled, set()).add(key)
        self.names = set().union(*self.by_package.values()) if self.by_package else set()
        # Methods, fields and interface methods by their own name: Go docs and answers call them bare, as the
        # framework's own doc comments do (`AbortWithStatus()`; `Print(v ...interface{})` in an interface's list).
        self.members = {name.rsplit(".", 1)[1] for name in self.names if "." in name}

    @classmethod
    def load(cls, path: Path) -> SymbolIndex:
        if not path.is_file():
            raise TrainerError(
                f"{path}: symbols file not found (run `trainer synthesize` with Go sources, or --symbols)"
            )
        with path.open(encoding="utf-8") as handle:
            return cls(json.loads(line) for line in handle if line.strip())

    def mentions(self, text: str) -> list[tuple[str, bool]]:
        """(name, known) for each API the text presents: `pkg.Name`, `pkg.Type.Method` and `Type.Method` with a
        framework package or type, and `Name(` inside inline code (known if a package has it or a type has it as a
        method or field)."""
        found = []
        for first, second, third in QUALIFIED.findall(text):
            if first in self.by_package:
                name = f"{second}.{third}" if third else second
                found.append((f"{first}.{name}", name in self.by_package[first]))
            elif first in self.types:
                found.append((f"{first}.{second}", f"{first}.{second}" in self.names))
        for span in INLINE_CODE.findall(text):
            found.extend((name, name in self.names or name in self.members) for name in BARE_CALL.findall(span))
        return found

    def begins(self, name: str) -> bool:
        """Whether `name` (as `mentions` gives it) is the start of a longer name the framework has: `Mux.Rout`, an
        answer cut by its token limit inside `Mux.Route`."""
        first, _, rest = name.partition(".")
        names = self.by_package.get(first) or (self.names if first in self.types else set())
        prefix = rest if first in self.by_package else name
        return any(known.startswith(prefix) and known != prefix for known in names)

    def referenced(self, text: str, home: str | None = None) -> set[str]:
        """The keys (`import/path.Name`, as symbols.jsonl's package and name) of the framework symbols a text names:
        the known names `mentions` finds, and names written as code (`Mux`, `Mux.Get` in an inline span or a fenced
        block, not after a `.`, and not the name a `func` declares: `func (c *Context) XML(` is not render.XML) or as
        a Go doc link (`[Mux]`). An unqualified name is looked up in `home` (an import path) when given, as Go
        resolves it in the package the code belongs to; else in every package. Prose without code marks is not
        read: `Router` in a sentence may be the English word."""
        spelled = {name for name, known in self.mentions(text) if known}
        code = CODE_FENCE.findall(text) + INLINE_CODE.findall(CODE_FENCE.sub(" ", text))
        spelled.update(name for span in code for name in CODE_NAME.findall(DECLARED.sub(r"\1", span)))
        spelled.update(DOC_LINK.findall(text))
        found: set[str] = set()
        for name in spelled:
            if home is not None and name.split(".")[0] not in self.by_package:
                found.update({f"{home}.{name}"} & self.all_keys)
            else:
                found.update(self.keys.get(name, ()))
        return found


def load_symbols(processed_dir: Path, path: Path | None = None) -> SymbolIndex | None:
    """The index at `path` (which must exist), else the one synthesis wrote beside the dataset, else None."""
    if path is not None:
        return SymbolIndex.load(path)
    written = processed_dir / SYMBOLS_FILE
    return SymbolIndex.load(written) if written.is_file() else None
