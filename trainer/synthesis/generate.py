"""Training conversations generated from a repository's API index, in the hand-written examples' format.

Each fact of a symbol is stated several ways and in both directions (`data.generation.mix`: conversations per fact
of each kind, each in its own phrasing): what it does, its signature, a type's members, which symbol does a job its
doc describes (`which_symbol`, the reverse), how-to questions answered with the framework's own code (`usage`,
`call_in_context`: usage.py), a contrast with a neighbour its doc names, which symbol a later sentence of its doc
is about (`detail`: often nearer a user's words than the first), and plausible names it does not have
(`no_such_api`: the answer says there is none and names the real one, or looks the name up first). Also Example
functions, package overviews, markdown doc sections and tool use (`lookup_docs`, the same tool the sample set uses).
Phrasings (phrasings.py) are drawn with a seeded RNG per (template, symbol), so runs are reproducible. Every
conversation carries its provenance: source, commit, file, line, template and symbol.

Probes (`generate_probes`, `phrasings.PROBE_TEMPLATES`) are questions for the test split alone, which measure whether
the model knows a trained fact: each asks for it the other way round from training and its answer repeats no
training answer (a name or a type and a fenced declaration: no prose to recite). `reverse_lookup`: which symbol does
what its doc comment's first sentence says, where training asks what the named symbol does. `returns`: which
framework type a func or method returns, which training shows only inside a signature. The split sends every probe
to test.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from string import Formatter
from typing import Any

from trainer.data_config import GenerationSettings
from trainer.go.parser import Symbol, signature_result, walk
from trainer.go.repo import RepoIndex
from trainer.go.usage import UsageSnippet
from trainer.synthesis.facts import Job, asked_by, details, first_sentence, inventions, job, misplaced, neighbours
from trainer.synthesis.phrasings import KIND_WORDS, ORIGINS, PHRASINGS

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


EXPORTED_NAME = re.compile(r"\b[A-Z]\w*")  # a Go identifier a package exports, as signatures write it


@dataclass
class Generated:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    provenance: dict[str, Any]
    key: str  # the symbol (or section) it teaches; caps count per key


def go_fence(code: str) -> str:
    """`code` as a fenced ```go block, as answers and teacher material show Go."""
    return f"```go\n{code}\n```"


class _Writer:
    """Builds the conversations of one repository; `rng` picks phrasings from (seed, template, key) alone."""

    def __init__(self, index: RepoIndex, source: str, commit: str | None, settings: GenerationSettings) -> None:
        self.index, self.source, self.commit, self.seed = index, source, commit, settings.seed
        self.mix = settings.mix
        self.out: list[Generated] = []
        self.shorts = index.short_names()
        self.system = SYSTEM.format(framework=source)  # one string shared by every conversation
        self.taken = {symbol.name for symbol in index.symbols}
        self.faked: set[str] = set()  # invented names already answered (`pkg.Name`): one invented name, one answer
        self.by_package: dict[str, dict[str, Symbol]] = {}
        self.declared: dict[str, set[str]] = {}  # by package short name, as answers qualify names
        self.import_paths: dict[str, str] = {}
        self.types: dict[str, set[str]] = {}  # each package's exported type names, by import path
        self.details = {f"{s.package}.{s.name}": details(s) for s in index.symbols}  # the docs' later sentences
        said = Counter(sentence for found in self.details.values() for sentence in set(found))
        self.shared_details = {sentence for sentence, count in said.items() if count > 1}  # "It prints a request ID …"
        for symbol in index.symbols:
            self.by_package.setdefault(symbol.package, {})[symbol.name] = symbol
            if symbol.kind == "type":
                self.types.setdefault(symbol.package, set()).add(symbol.name)
            self.declared.setdefault(self.short(symbol.package), set()).add(symbol.name)
            self.import_paths[self.short(symbol.package)] = symbol.package

    def short(self, package: str) -> str:
        """How questions and answers name the package (RepoIndex.short_names)."""
        return self.shorts.get(package) or package.rsplit("/", 1)[-1]

    def questions(self, template: str, key: str, fields: dict[str, str]) -> list[str]:
        """`mix[template]` distinct phrasings (one: today's seeded choice), drawn from (seed, template, key) among
        those `fields` can fill (a symbol described by what it is, not by a job, has no `{job}`)."""
        count = getattr(self.mix, template, 1)  # probes (PROBE_TEMPLATES): one question each, outside the mix
        rng = random.Random(f"{self.seed}:{template}:{key}")
        usable = [p for p in PHRASINGS[template] if {f for _, f, _, _ in Formatter().parse(p) if f} <= set(fields)]
        if count == 1:
            return [rng.choice(usable)]
        return rng.sample(usable, min(count, len(usable)))

    def add(
        self,
        template: str,
        package: str,
        key: str,
        where: tuple[str, int],
        fields: dict[str, str],
        answer: str | Callable[[int], str],
        tool_turns: list[dict[str, Any]] | None = None,
        number: int | None = None,
    ) -> None:
        """One conversation per phrasing the mix asks for (`answer(i)` may vary the answer's frame with i); with
        `number`, only that one: templates whose conversations each show other material (a use, an invented name)."""
        phrasings = list(enumerate(self.questions(template, key, fields)))
        for index, phrasing in phrasings if number is None else [phrasings[number % len(phrasings)]]:
            text = answer(index) if callable(answer) else answer
            messages = [
                {"role": "system", "content": self.system},
                {"role": "user", "content": phrasing.format(**fields)},
                *(tool_turns or []),
                {"role": "assistant", "content": text.strip()},
            ]
            origin = row_provenance(self.source, self.commit, where[0], where[1], template, key, package)
            self.out.append(Generated(messages, [LOOKUP_DOCS] if tool_turns else None, origin, key))

    def symbol(self, symbol: Symbol, uses: list[UsageSnippet]) -> None:
        pkg = self.short(symbol.package)
        q, key, where = f"{pkg}.{symbol.name}", f"{symbol.package}.{symbol.name}", (symbol.file, symbol.line)
        fields = {"q": q, "pkg": pkg, "source": self.source}
        signature = go_fence(symbol.signature)
        declared = f"`{q}` is declared in `{symbol.package}`:\n\n{signature}"
        described = job(symbol)
        kind = KIND_WORDS[symbol.kind]
        if symbol.doc:
            said = f"`{q}` {described.third}." if described else first_sentence(symbol.doc)
            frames = [f"{symbol.doc}\n\n{declared}", f"{said}\n\n{signature}\n\n{symbol.doc}"]
            self.add("what_does", symbol.package, key, where, fields, lambda i: frames[i % 2])
            call = {"name": "lookup_docs", "arguments": {"package": symbol.package, "name": symbol.name}}
            turns = [{"role": "assistant", "tool_calls": [call]}, {"role": "tool", "content": lookup_result(symbol)}]
            self.add("tool_lookup", symbol.package, key, where, fields, f"{symbol.doc}\n\n{signature}", turns)
        if symbol.kind in ("func", "method"):
            receiver = f"\n\nIt is a method of `{pkg}.{symbol.name.split('.')[0]}`." if symbol.kind == "method" else ""
            summary = f"\n\n{first_sentence(symbol.doc)}" if symbol.doc else ""
            # The second frame names the symbol before its summary: siblings with one doc pattern (chi's Get, Post, …)
            # share no 12-word span across the code block then (the split would tie them together).
            frames = [f"{signature}{receiver}{summary}", f"`{q}` is called as:\n\n{signature}{receiver}{summary}"]
            self.add("signature", symbol.package, key, where, fields, lambda i: frames[i % 2])
        if symbol.kind == "type" and symbol.members:
            lines = [
                f"- `{m['name']}` `{m['type']}`" + (f": {first_sentence(m['doc'])}" if m["doc"] else "")
                for m in symbol.members
            ]
            self.add("members", symbol.package, key, where, fields, signature + "\n\n" + "\n".join(lines))
        # The symbol's name before the doc's words, as the other frames (facts below); no sentence two symbols share
        # (Logger's and Recoverer's "It prints a request ID …"): one question, two answers.
        told = [f"That is `{q}`. {first_sentence(symbol.doc)}\n\n{signature}", f"`{q}`.\n\n{symbol.doc}"]
        for detail in [d for d in self.details[key] if d not in self.shared_details]:
            detailed = fields | {"kind": kind, "detail": detail}
            self.add("detail", symbol.package, key, where, detailed, lambda i: told[i % 2])
        if described:
            job_field = {"job": described.base} if described.base else {}
            self.facts(symbol, q, key, where, fields | {"kind": kind, **job_field}, described, uses)
        elif uses:
            self.used(symbol.package, q, key, fields, uses, 0)

    def facts(
        self,
        symbol: Symbol,
        q: str,
        key: str,
        where: tuple[str, int],
        fields: dict[str, str],
        described: Job,
        uses: list[UsageSnippet],
    ) -> None:
        """The facts a described job allows: which symbol does it, how-to with real code, contrasts, inventions (a
        symbol described by what it is: no how-to by job, its uses shown as `call_in_context`)."""
        signature, sentence = go_fence(symbol.signature), first_sentence(symbol.doc)
        # Each frame names the symbol before the doc's words: a name after them would join siblings whose docs differ
        # early ("… a GET http method to execute the `handlerFn` …") into one span, and the split would send a seen
        # sibling to test with a held-out one.
        frames = [
            f"Use `{q}`:\n\n{signature}\n\n{sentence}",
            f"`{q}` does that: it {described.third}.\n\n{signature}",
            f"That is `{q}`. {sentence}\n\n{signature}",
        ]
        fields = fields | {"third": described.third}
        self.add("which_symbol", symbol.package, key, where, fields, lambda i: frames[i % 3])
        for number, use in enumerate(uses[: self.mix.usage] if described.base else []):
            origin = ORIGINS.get(use.origin, use.origin)
            lead = [f"Use `{q}`; it {described.third}.", f"With `{q}`, as {self.source}'s own {origin} do:"][number % 2]
            answer = f"{lead}\n\n{go_fence(use.code)}"
            self.add("usage", symbol.package, key, (use.file, use.line), fields, answer, number=number)
        self.used(symbol.package, q, key, fields, uses, self.mix.usage if described.base else 0)
        for number, (other, named) in enumerate(neighbours(symbol, self.by_package[symbol.package])):
            if number >= self.mix.contrast:
                break
            other_q = f"{self.short(other.package)}.{other.name}"
            # The neighbour by its declaration, not its doc: its doc's words in this answer would tie the two
            # symbols' conversations together in the split (a held-out neighbour would pull this one into test).
            answer = (
                f"`{q}`: {first_sentence(symbol.doc)}\n\n`{other_q}` is declared as:\n\n{go_fence(other.signature)}"
            )
            if named != first_sentence(symbol.doc):
                answer += f"\n\nAs the docs of `{q}` put it: {named}"
            self.add("contrast", symbol.package, key, where, fields | {"other": other_q}, answer, number=number)
        for number, (home, fake) in enumerate(self.fakes(symbol, described)):
            fake_q = f"{home}.{fake}"
            call = {"name": "lookup_docs", "arguments": {"package": self.import_paths[home], "name": fake}}
            turns = [
                {"role": "assistant", "tool_calls": [call]},
                {"role": "tool", "content": f"no exported symbol {fake} in {self.import_paths[home]}"},
            ]
            lookup = random.Random(f"{self.seed}:no_such_api:{key}:{fake}").random() < 0.5
            # The answer never writes the made-up name: what an answer writes is what the model learns to write, and
            # a quarter of the data writing names the framework lacks taught it to make them up (docs/quality.md).
            # The real name before the job: siblings' jobs differ late ("… matches a PUT http method"), and a fixed
            # frame before the job would tie their conversations together in the split.
            opening = "The docs have no such name." if lookup else f"{self.source} has no API by that name."
            answer = f"{opening} Use `{q}`, the {fields['kind']} that {described.third}:\n\n{signature}\n\n{sentence}"
            tools = turns if lookup else None
            self.add("no_such_api", symbol.package, key, where, fields | {"fake": fake_q}, answer, tools, number)

    def fakes(self, symbol: Symbol, described: Job) -> list[tuple[str, str]]:
        """The `no_such_api` names of a symbol, (package short name, name): the one made from its job first, then
        its own name misplaced (facts.misplaced), then the other made-up ones; each used once in the whole data."""
        pkg = self.short(symbol.package)
        own = [(pkg, name) for name in inventions(symbol, described, self.taken)]
        types = self.types.get(symbol.package, set())
        result = returned_types(symbol.signature, types) if symbol.kind == "func" else None
        returned = next((n for n in EXPORTED_NAME.findall(result or "") if n in types), None)
        candidates = own[:1] + misplaced(symbol, pkg, self.declared, returned) + own[1:]
        chosen = [(home, name) for home, name in candidates if f"{home}.{name}" not in self.faked]
        chosen = chosen[: self.mix.no_such_api]
        self.faked.update(f"{home}.{name}" for home, name in chosen)
        return chosen

    def used(self, package: str, q: str, key: str, fields: dict[str, str], uses: list[UsageSnippet], skip: int) -> None:
        """`call_in_context`: the symbol named, shown in the framework's own code (other uses than `usage` showed)."""
        rest = uses[skip:] or uses
        for number, use in enumerate(rest[: self.mix.call_in_context]):
            origin = ORIGINS.get(use.origin, use.origin)
            answer = f"From {self.source}'s own {origin} (`{use.file}`):\n\n{go_fence(use.code)}"
            self.add("call_in_context", package, key, (use.file, use.line), fields, answer, number=number)

    def probes(self, symbol: Symbol) -> None:
        """The symbol's probes (module doc)."""
        types = self.types.get(symbol.package, set())
        pkg = self.short(symbol.package)
        q, key, where = f"{pkg}.{symbol.name}", f"{symbol.package}.{symbol.name}", (symbol.file, symbol.line)
        declared = go_fence(symbol.signature) if symbol.kind in ("func", "method") else ""
        rest = asked_by(symbol)  # not "which type type is …", "which function middleware will …"
        if rest is not None and len(rest.split()) >= 3:
            fields = {"pkg": pkg, "kind": KIND_WORDS[symbol.kind], "rest": rest}
            self.add(
                "reverse_lookup",
                symbol.package,
                key,
                where,
                fields,
                f"`{q}`" + (f":\n\n{declared}" if declared else "."),
            )
        result = returned_types(symbol.signature, types) if symbol.kind in ("func", "method") else None
        if result:
            qualified = EXPORTED_NAME.sub(lambda m: f"{pkg}.{m[0]}" if m[0] in types else m[0], result)
            self.add("returns", symbol.package, key, where, {"q": q}, f"`{qualified}`:\n\n{declared}")

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


def returned_types(signature: str, types: set[str]) -> str | None:
    """The result list of a func or method signature (`*Mux`, `(Router, error)`) when it names one of `types`."""
    result = signature_result(signature)
    if result is None:
        return None
    named = {n.text.decode() for n in walk(result) if n.type == "type_identifier" and n.parent.type != "qualified_type"}
    return result.text.decode() if named & types else None


def generate(
    index: RepoIndex,
    source: str,
    commit: str | None,
    settings: GenerationSettings,
    uses: dict[str, list[UsageSnippet]] | None = None,
) -> list[Generated]:
    """Every conversation one repository yields, before caps and deduplication; `uses`: compiled usage snippets of
    each symbol (by key), best first."""
    writer = _Writer(index, source, commit, settings)
    for symbol in index.symbols:
        writer.symbol(symbol, (uses or {}).get(f"{symbol.package}.{symbol.name}", []))
    writer.examples()
    writer.overviews()
    writer.sections()
    return writer.out


def generate_probes(index: RepoIndex, source: str, commit: str | None, settings: GenerationSettings) -> list[Generated]:
    """The repository's probes (module doc): outside data.generation's caps, which size the training mix; none where
    `probes` is off."""
    if not settings.probes:
        return []
    writer = _Writer(index, source, commit, settings)
    for symbol in index.symbols:
        writer.probes(symbol)
    return writer.out
