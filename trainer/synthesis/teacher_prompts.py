"""What the teacher is asked and what its replies must be: the material each request carries (a symbol's signature,
doc comment, methods and `Example` functions, or a markdown section, with where it was read), the instructions per
kind of conversation, the repair and judge turns, and the strict readers of the replies.

The contract: one JSON object `{"conversations": [{"messages": [...], "tools": [...]?}, ...]}` whose records pass
`examples.normalise_record`, the validator of the hand-written JSONL (control tokens included). Anything else is
malformed; nothing is guessed at (no fence stripping, no repair of broken JSON).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, NamedTuple

from trainer.go.parser import GoExample, Symbol
from trainer.go.repo import RepoIndex
from trainer.jsonl import json_problem, strict_loads
from trainer.synthesis.examples import InvalidRecord, normalise_record
from trainer.synthesis.generate import LOOKUP_DOCS, MIN_SECTION_WORDS, go_fence, lookup_result

MAX_SECTION_CHARS = 6000  # a long README section is cut: the request must leave the teacher room to write
MAX_METHODS = 12
MAX_EXAMPLES = 2
MAX_RELATED = 4
RETURNED_TYPE = re.compile(r"\)\s*\(?\*?(\w+)\b[^()]*\)?\s*$")  # `func New() *Mux`, `func F() (Mux, error)` → Mux
TOOL_KIND = "tool_use"
# A teacher's system turn is its own role-play, different in every reply and never checked against the API index;
# the model is trained (and evaluated) with the pipeline's one system turn instead.
OWN_SYSTEM_TURN = "its own system turn replaced by the pipeline's"

CONTRACT = """Reply with exactly one JSON object and nothing before or after it:
{"conversations": [{"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}]}
Roles are user, assistant and tool; no system turn. Every conversation starts with a user turn and ends with an
assistant turn. Put Go code in fenced ```go blocks inside "content"."""
RULES = """You write training conversations for a coding assistant that knows the {framework} Go framework (module
{import_path}). Questions are what developers ask while building something ("How do I ...?"), not "What does X do?".
Answers use the API the material shows and Go's standard library: never a function, method, type or field of the
framework that the material does not show. Every ```go block is a complete file (package clause, imports, func main
or the functions it needs) that compiles with `go vet` against {import_path}."""
KINDS = {
    "howto": "Write {n} conversations of two turns: a how-to question a developer would ask, answered with a short "
    "explanation and complete Go code that uses the API in the material.",
    "followup": "Write {n} conversations of four turns: a how-to question, an answer with complete Go code, a "
    "follow-up question building on that answer (a variation, an error case, a test), and its answer with complete "
    "Go code.",
    TOOL_KIND: "Write {n} conversations in which the assistant looks the API up first: a how-to question; an "
    'assistant turn with "content": "" and "tool_calls": [{{"name": "lookup_docs", "arguments": {{"package": '
    '"{package}", "name": "{name}"}}}}]; a tool turn whose content is exactly the documentation quoted below; then '
    'the assistant\'s answer with complete Go code. Give each conversation "tools": [{tool}].',
}
REPAIR = """Conversation {number} of your reply has Go code that does not compile. go vet says:

{message}

Correct it. Reply with that one conversation only, as {{"conversations": [<the corrected conversation>]}}, in the
same JSON format and nothing else."""
JUDGE = """You grade training conversations for a coding assistant that knows the {framework} Go framework. Score
the conversation from 1 (useless or wrong) to 10 (a question developers ask, answered correctly per the material
with idiomatic, complete code). Reply with exactly one JSON object:
{{"score": <integer 1-10>, "reason": "<one sentence>"}}."""


@dataclass
class Subject:
    """What one request is about: a symbol (`key` = `package.Name`) or a markdown section (`file#title`)."""

    key: str
    package: str
    file: str
    line: int
    material: str
    tool_result: str = ""  # what lookup_docs returns for a symbol; '' for a section (no tool-use request)


class Related(NamedTuple):
    """Per (package, name): a type's methods and constructors (funcs of the package returning it, `T` or `*T`), and
    a symbol's Example functions."""

    methods: dict[tuple[str, str], list[Symbol]]
    constructors: dict[tuple[str, str], list[Symbol]]
    examples: dict[tuple[str, str], list[GoExample]]


def _related(index: RepoIndex) -> Related:
    """One pass over the index, so a large framework's subjects take linear time."""
    related = Related(defaultdict(list), defaultdict(list), defaultdict(list))
    for symbol in index.symbols:
        if symbol.kind == "method":
            related.methods[(symbol.package, symbol.name.split(".")[0])].append(symbol)
        elif symbol.kind == "func" and (returned := RETURNED_TYPE.search(symbol.signature)):
            related.constructors[(symbol.package, returned.group(1))].append(symbol)
    for example in index.examples:
        related.examples[(example.package, example.target)].append(example)
    return related


def _symbol_subject(symbol: Symbol, index: RepoIndex, where: str, related: Related) -> Subject:
    methods, constructors = related.methods, related.constructors
    short = symbol.package_name or index.packages.get(symbol.package, {}).get("name", "")
    parts = [
        f"From {where}, {symbol.file}:{symbol.line}, package {symbol.package} (`package {short}`):",
        go_fence(symbol.signature),
        symbol.doc,
    ]
    type_name = symbol.name.split(".")[0] if symbol.kind in ("type", "method") else ""
    made_by = [f for f in constructors.get((symbol.package, type_name), []) if f.name != symbol.name]
    if made_by:  # how a developer gets the value the question is about
        parts.append(f"Making a {type_name}:\n" + go_fence("\n".join(f.signature for f in made_by[:MAX_RELATED])))
    if symbol.kind == "type" and (own := methods.get((symbol.package, symbol.name))):
        parts.append(f"Methods of {symbol.name}:\n" + go_fence("\n".join(m.signature for m in own[:MAX_METHODS])))
    for example in related.examples.get((symbol.package, symbol.name), [])[:MAX_EXAMPLES]:
        parts.append(f"{example.name} ({example.file}:{example.line}):\n" + go_fence(example.code))
    return Subject(
        key=f"{symbol.package}.{symbol.name}",
        package=symbol.package,
        file=symbol.file,
        line=symbol.line,
        material="\n\n".join(parts),
        tool_result=lookup_result(symbol),
    )


def subjects(index: RepoIndex, where: str, seed: int) -> list[Subject]:
    """Documented funcs, methods and types, and doc sections, in a seeded hash order: a budget that stops early has
    asked about a spread of packages, and the same ones on every run."""
    related = _related(index)
    found = [
        _symbol_subject(symbol, index, where, related)
        for symbol in index.symbols
        if symbol.kind in ("func", "method", "type") and symbol.doc.strip()
    ]
    for section in index.sections:
        if len(section.text.split()) >= MIN_SECTION_WORDS:
            text = section.text[:MAX_SECTION_CHARS]
            found.append(
                Subject(
                    key=f"{section.file}#{section.title}",
                    package=index.import_path,
                    file=section.file,
                    line=section.line,
                    material=f'From {where}, {section.file}:{section.line}, section "{section.title}":\n\n{text}',
                )
            )
    return sorted(found, key=lambda s: hashlib.sha256(f"{seed}:teacher:{s.key}".encode()).hexdigest())


def ask(subject: Subject, kind: str, framework: str, import_path: str, count: int) -> list[dict[str, str]]:
    """The first turn of a request: the rules, the material and what to write."""
    name = subject.key.removeprefix(subject.package + ".")
    task = KINDS[kind].format(n=count, package=subject.package, name=name, tool=json.dumps(LOOKUP_DOCS))
    system = RULES.format(framework=framework, import_path=import_path) + "\n\n" + CONTRACT
    if kind == TOOL_KIND:
        task += f"\n\nThe documentation lookup_docs returns:\n\n{subject.tool_result}"
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Material:\n\n{subject.material}\n\n{task}"},
    ]


def repair(chat: list[dict[str, str]], reply: str, number: int, message: str) -> list[dict[str, str]]:
    """The same chat, the teacher's reply, and the compiler's message for one of its conversations."""
    return [
        *chat,
        {"role": "assistant", "content": reply},
        {"role": "user", "content": REPAIR.format(number=number, message=message)},
    ]


def judge(framework: str, material: str, conversation: dict[str, Any]) -> list[dict[str, str]]:
    shown = json.dumps(conversation, ensure_ascii=False, indent=1)
    return [
        {"role": "system", "content": JUDGE.format(framework=framework)},
        {"role": "user", "content": f"Material:\n\n{material}\n\nConversation:\n\n{shown}"},
    ]


class Malformed(ValueError):
    """A reply (or one conversation in it) outside the contract; the message says how."""


def read_reply(content: str, finish_reason: str = "") -> list[Any]:
    """The raw conversation records of a reply, or Malformed when it is not the contract's one object."""
    cut = " (the reply was cut at max_tokens)" if finish_reason == "length" else ""
    try:
        decoded = strict_loads(content)
    except (ValueError, RecursionError) as exc:
        raise Malformed(f"not one JSON object: {json_problem(exc)}{cut}") from None
    if not isinstance(decoded, dict) or set(decoded) != {"conversations"}:
        raise Malformed('expected exactly {"conversations": [...]}' + cut)
    conversations = decoded["conversations"]
    if not isinstance(conversations, list) or not conversations:
        raise Malformed('"conversations" must be a non-empty list')
    return conversations


class Conversation(NamedTuple):
    messages: list[dict[str, Any]]  # without a system turn: the pipeline adds its own to every kept conversation
    tools: list[dict[str, Any]] | None
    notes: list[str]  # what was normalised, as `normalise_record` notes it for a hand-written example


def conversation(record: Any, escape_control_tokens: bool) -> Conversation:
    """One record checked as a hand-written example is, its own system turn (which the format allows and chat models
    write) left out with a note, and refused for what a teacher must not do: a tool other than lookup_docs as the
    pipeline defines it."""
    notes: list[str] = []
    try:
        messages, tools = normalise_record(record, notes, escape_control_tokens)
    except InvalidRecord as exc:
        raise Malformed(str(exc)) from None
    if messages[0]["role"] == "system":
        messages = messages[1:]
        notes.append(OWN_SYSTEM_TURN)
    calls = [call for message in messages for call in message.get("tool_calls", [])]
    if tools is not None and tools != [LOOKUP_DOCS]:
        raise Malformed("'tools' must be exactly the lookup_docs definition the request gave")
    if calls and tools is None:
        raise Malformed("tool calls without 'tools'")
    if any(call["name"] != "lookup_docs" for call in calls):
        raise Malformed("a tool call to a tool other than lookup_docs")
    return Conversation(messages, tools, notes)


def verdict(content: str) -> tuple[int, str]:
    """(score, reason) from a judge's reply, or Malformed."""
    try:
        decoded = strict_loads(content)
    except (ValueError, RecursionError) as exc:
        raise Malformed(f"judge reply is not JSON: {json_problem(exc)}") from None
    score = decoded.get("score") if isinstance(decoded, dict) else None
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 10:
        raise Malformed('judge reply needs {"score": <integer 1-10>, ...}')
    reason = decoded.get("reason")
    return score, reason if isinstance(reason, str) else ""
