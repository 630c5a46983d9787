"""Training conversations generated from a repository's API index, in the hand-written examples' format.

Templates: what a symbol does, its signature, a type's members, an Example function, which function does Y (reverse
look-up from the doc's first sentence), package overviews, markdown doc sections, and tool use (`lookup_docs`, the
same tool the sample set uses). Phrasings are drawn with a seeded RNG per (template, symbol), so runs are
reproducible. Every conversation carries its provenance: source, commit, file, line, template and symbol.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainer.data_config import GenerationSettings
from trainer.go.parser import Symbol
from trainer.go.repo import RepoIndex

SYSTEM = "You are a coding assistant for the {framework} Go framework. Answer with its exact API."
LOOKUP_DOCS = {
    "type": "function",
    "function": {
        "name": "lookup_docs",
        "description": "Return the signature and doc comment of an exported Go symbol.",
        "parameters": {
            "type": "object",
            "properties": {
                "package": {"type": "string", "description": "Import path"},
                "name": {"type": "string", "description": "Func, Type or Type.Method"},
            },
            "required": ["package", "name"],
        },
    },
}
MIN_SECTION_WORDS = 8  # a doc section shorter than this (a heading with a line under it) teaches nothing


def lookup_result(symbol: Symbol) -> str:
    """What lookup_docs returns for `symbol`: the tool turn of a conversation that calls it."""
    return f"{symbol.signature}\n\n{symbol.doc}"


def row_provenance(
    source: str, commit: str | None, file: str, line: int, template: str, symbol: str, package: str
) -> dict[str, Any]:
    """A generated row's provenance: where its material is, which template (or the teacher) wrote it, about what."""
    return {
        "source": source,
        "commit": commit,
        "file": file,
        "line": line,
        "template": template,
        "symbol": symbol,
        "package": package,
    }


PHRASINGS = {
    "what_does": ["What does `{q}` do?", "Explain `{q}` in {pkg}.", "What is `{q}` for?"],
    "signature": ["What is the signature of `{q}`?", "How do I call `{q}`?", "What does `{q}` take and return?"],
    "members": ["What does the `{q}` type contain?", "Which members does `{q}` have?", "Show me the `{q}` type."],
    "example": ["Give an example of using `{q}`.", "Show me example code for `{q}`.", "How is `{q}` used?"],
    "reverse_lookup": ["In {pkg}, which {kind} {rest}?", "Which {pkg} {kind} {rest}?"],
    "overview": ["What is the `{import_path}` package for?", "Give me an overview of package {pkg}."],
    "doc_section": ['Explain "{title}" from the {source} docs.', "What do the {source} docs say about {title}?"],
    "tool_lookup": ["How do I use `{q}`?", "Can you tell me how `{q}` works?"],
}
TEMPLATES = tuple(PHRASINGS)
FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)", re.DOTALL)


@dataclass
class Generated:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    provenance: dict[str, Any]
    key: str  # the symbol (or section) it teaches; caps count per key


def first_sentence(doc: str) -> str:
    flat = " ".join(doc.split())
    found = FIRST_SENTENCE.match(flat)
    return found.group(1) if found else flat


def go_fence(code: str) -> str:
    """`code` as a fenced ```go block, as answers and teacher material show Go."""
    return f"```go\n{code}\n```"


class _Writer:
    """Builds the conversations of one repository; `rng` picks phrasings from (seed, template, key) alone."""

    def __init__(self, index: RepoIndex, source: str, commit: str | None, settings: GenerationSettings) -> None:
        self.index, self.source, self.commit, self.seed = index, source, commit, settings.seed
        self.out: list[Generated] = []
        self.names = Counter(entry["name"] for entry in index.packages.values())
        self.system = SYSTEM.format(framework=source)  # one string shared by every conversation

    def short(self, package: str) -> str:
        """How questions and answers name the package: its name, or its import path where two packages share the
        name (v1 and v2 of one module; else `x.New` would get one answer per package, contradicting each other)."""
        name = self.index.packages.get(package, {}).get("name") or package.rsplit("/", 1)[-1]
        return package if self.names[name] > 1 else name

    def add(
        self,
        template: str,
        package: str,
        key: str,
        where: tuple[str, int],
        fields: dict[str, str],
        answer: str,
        tool_turns: list[dict[str, Any]] | None = None,
    ) -> None:
        rng = random.Random(f"{self.seed}:{template}:{key}")
        question = rng.choice(PHRASINGS[template]).format(**fields)
        system = {"role": "system", "content": self.system}
        messages = [
            system,
            {"role": "user", "content": question},
            *(tool_turns or []),
            {"role": "assistant", "content": answer.strip()},
        ]
        origin = row_provenance(self.source, self.commit, where[0], where[1], template, key, package)
        self.out.append(Generated(messages, [LOOKUP_DOCS] if tool_turns else None, origin, key))

    def symbol(self, symbol: Symbol) -> None:
        pkg = self.short(symbol.package)
        q, key, where = f"{pkg}.{symbol.name}", f"{symbol.package}.{symbol.name}", (symbol.file, symbol.line)
        fields = {"q": q, "pkg": pkg}
        declared = f"`{q}` is declared in `{symbol.package}`:\n\n{go_fence(symbol.signature)}"
        if symbol.doc:
            self.add("what_does", symbol.package, key, where, fields, f"{symbol.doc}\n\n{declared}")
            call = {"name": "lookup_docs", "arguments": {"package": symbol.package, "name": symbol.name}}
            turns = [{"role": "assistant", "tool_calls": [call]}, {"role": "tool", "content": lookup_result(symbol)}]
            self.add(
                "tool_lookup",
                symbol.package,
                key,
                where,
                fields,
                f"{symbol.doc}\n\n{go_fence(symbol.signature)}",
                turns,
            )
        if symbol.kind in ("func", "method"):
            receiver = f"\n\nIt is a method of `{pkg}.{symbol.name.split('.')[0]}`." if symbol.kind == "method" else ""
            summary = f"\n\n{first_sentence(symbol.doc)}" if symbol.doc else ""
            self.add(
                "signature", symbol.package, key, where, fields, f"{go_fence(symbol.signature)}{receiver}{summary}"
            )
            rest = first_sentence(symbol.doc).removeprefix(symbol.name.split(".")[-1] + " ").rstrip(".")
            if symbol.doc.startswith(symbol.name.split(".")[-1] + " ") and len(rest.split()) >= 3:
                kind = "method" if symbol.kind == "method" else "function"
                answer = f"`{q}`:\n\n{go_fence(symbol.signature)}\n\n{first_sentence(symbol.doc)}"
                self.add("reverse_lookup", symbol.package, key, where, fields | {"kind": kind, "rest": rest}, answer)
        if symbol.kind == "type" and symbol.members:
            lines = [
                f"- `{m['name']}` `{m['type']}`" + (f": {first_sentence(m['doc'])}" if m["doc"] else "")
                for m in symbol.members
            ]
            self.add(
                "members", symbol.package, key, where, fields, go_fence(symbol.signature) + "\n\n" + "\n".join(lines)
            )

    def examples(self) -> None:
        for example in self.index.examples:
            pkg = self.short(example.package)
            target = example.target or pkg
            key = f"{example.package}.{example.target}" if example.target else example.package
            answer = (example.doc + "\n\n" if example.doc else "") + go_fence(example.code)
            if example.output:
                answer += f"\n\nIt prints:\n\n```\n{example.output}\n```"
            q = f"{pkg}.{target}" if example.target else pkg
            self.add(
                "example",
                example.package,
                f"{key}#{example.name}",
                (example.file, example.line),
                {"q": q, "pkg": pkg},
                answer,
            )

    def overviews(self) -> None:
        listed: dict[str, list[Symbol]] = {}  # one pass over the symbols, not one per package
        for symbol in self.index.symbols:
            if symbol.kind in ("type", "func"):
                listed.setdefault(symbol.package, []).append(symbol)
        for package, info in sorted(self.index.packages.items()):
            if not info["doc"]:
                continue
            names = listed.get(package, [])
            listing = ", ".join(f"`{s.name}`" for s in names[:12]) + (", …" if len(names) > 12 else "")
            answer = info["doc"] + (f"\n\nIts main types and functions: {listing}." if names else "")
            fields = {"import_path": package, "pkg": info["name"]}
            self.add("overview", package, package, (package, 0), fields, answer)

    def sections(self) -> None:
        for section in self.index.sections:
            if len(section.text.split()) < MIN_SECTION_WORDS:
                continue
            title = section.title.split(" > ")[-1]
            fields = {"title": title, "source": self.source}
            self.add(
                "doc_section",
                self.index.import_path,
                f"{section.file}#{section.title}",
                (section.file, section.line),
                fields,
                section.text,
            )


def _stable_order(items: list[Generated], salt: str) -> list[Generated]:
    def rank(item: Generated) -> str:
        return hashlib.sha256(f"{salt}:{item.provenance['template']}:{item.key}".encode()).hexdigest()

    return sorted(items, key=rank)


def _keep_per_group(
    items: list[Generated], limit: int, group: Callable[[Generated], str], salt: str
) -> tuple[list[Generated], int]:
    """At most `limit` items per group, the first in a seeded hash order (so the choice is stable); and the count
    of those dropped."""
    kept, count = [], Counter()
    for item in _stable_order(items, salt):
        if count[group(item)] < limit:
            count[group(item)] += 1
            kept.append(item)
    return kept, len(items) - len(kept)


def cap_per_key(items: list[Generated], limit: int, seed: int) -> tuple[list[Generated], int]:
    """At most `limit` conversations per symbol."""
    return _keep_per_group(items, limit, lambda item: item.key, f"{seed}:symbol")


def cap_package_share(items: list[Generated], share: float, seed: int) -> tuple[list[Generated], int]:
    """No package holds more than `share` of the kept conversations (water-filling: the cap counts what is kept)."""
    sizes = Counter(item.provenance["package"] for item in items)
    if len(sizes) < 2:
        return items, 0
    cap = share * sum(sizes.values())
    for _ in range(100):
        new_cap = share * sum(min(size, cap) for size in sizes.values())
        if abs(new_cap - cap) < 0.5:
            break
        cap = new_cap
    return _keep_per_group(items, max(1, int(cap)), lambda item: item.provenance["package"], f"{seed}:package")


def generate(index: RepoIndex, source: str, commit: str | None, settings: GenerationSettings) -> list[Generated]:
    """Every conversation one repository yields, before caps and deduplication."""
    writer = _Writer(index, source, commit, settings)
    for symbol in index.symbols:
        writer.symbol(symbol)
    writer.examples()
    writer.overviews()
    writer.sections()
    return writer.out
