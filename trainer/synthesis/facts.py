"""What a symbol's doc says, read for stating one fact several ways: the job it does or what it is (for questions
that describe it and ask for the symbol), what its doc's later sentences add, the neighbours its doc contrasts it
with, and plausible names it does not have: made up from its name and job, or its own name where a user misremembers
it (in another package, on another receiver).

All of it is drawn from the doc text, so a question says what the framework's authors wrote, in the user's voice:
"URLParam returns the url parameter from a http.Request object." gives the job "get the url parameter from a
http.Request object"; "Logger is a middleware that logs the start and end of each request" gives "log the start
and end of each request".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trainer.go.parser import Symbol
from trainer.synthesis.phrasings import KIND_WORDS

FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)", re.DOTALL)
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`(\[])")  # not the dot of `http.Handler`
# "X is a middleware that …", "X is an http.Handler which …": the clause after `that` says what X does.
IS_A_THAT = re.compile(r"^(?:is|are) (?:a|an|the) [\w.\- ]{1,40}? (?:that|which) (.+)$")
IS_A = re.compile(r"^(?:is|are) (?:a|an|the|called|used) ")
# "Heartbeat endpoint middleware useful to setting up a path …": what it is good for, after what the doc calls it.
USEFUL = re.compile(r"^[\w\- ]{1,40}? (useful (?:to|for) .+)$")
USED_TO = re.compile(r"^(?:can|may) be used to ")  # "SetEncoder can be used to set …": the job is after it
# "CleanPath middleware will clean out …", "Middlewares type is a slice …", "Routes interface adds …": the name, then
# what it is, then the job.
DOC_KINDS = "type|interface|struct|func|function|middleware"  # what docs call a symbol after its name
KIND_NOUN = re.compile(rf"^(?:{DOC_KINDS}) (?=\w)")
IRREGULAR = {"does": "do", "has": "have", "returns": "get"}
MIN_JOB_WORDS = 3
MIN_DETAIL_WORDS = 6
NOT_DETAIL = re.compile(r"https?://|[{}]|`{3}|:=|:$|^(?:See|For ex)\b")  # a link, code, an example's opening line
MIN_ADVERB_CHARS = 5  # "automatically route …" reads past the adverb; "only if …" does not
ARTICLES = {"a", "an", "the", "of", "to", "for", "from", "with", "and", "or", "in", "on", "given", "each", "its"}


def first_sentence(doc: str) -> str:
    flat = " ".join(doc.split())
    found = FIRST_SENTENCE.match(flat)
    return found.group(1) if found else flat


def prose_sentences(doc: str) -> list[str]:
    """A doc comment's sentences, its code blocks (indented lines) aside."""
    prose = " ".join(line for line in doc.splitlines() if not line[:1].isspace())
    return [s for s in SENTENCE_END.split(" ".join(prose.split())) if s]


def details(symbol: Symbol) -> list[str]:
    """What the doc says of the symbol after its first sentence, the symbol named as "it" ("Logger prints a request
    ID …" → "It prints a request ID …") or "this method": more of its authors' words about it, often nearer a user's
    ("useful to split up a large API as many independent routers") than the first sentence's. Sentences with a link,
    code, a colon that opens an example, or fewer than MIN_DETAIL_WORDS words are left out."""
    name = symbol.name.split(".")[-1]
    called = rf"(?: (?:{DOC_KINDS}|method))?"  # what the doc calls it ("Throttle middleware"), a method too
    own = re.compile(rf"(?:\bthe )?(?<![\w.]){re.escape(name)}(?:\(\))?{called}(?!\w)")
    found = []
    for sentence in prose_sentences(symbol.doc)[1:]:
        if len(sentence.split()) < MIN_DETAIL_WORDS or NOT_DETAIL.search(sentence):
            continue
        if sentence.startswith(f"{name} "):
            sentence = "It" + own.sub("", sentence, count=1)
        found.append(own.sub(f"this {KIND_WORDS[symbol.kind]}", sentence))
    return found


def base_form(verb: str) -> str | None:
    """A third-person verb in its base form (`compresses` → `compress`), else None (not a verb form we know)."""
    if verb in IRREGULAR:
        return IRREGULAR[verb]
    if len(verb) < 3 or not verb.isalpha() or not verb.islower() or verb.endswith(("ss", "us", "is")):
        return None
    if verb.endswith("ies"):
        return verb[:-3] + "y"
    if verb.endswith(("sses", "shes", "ches", "xes", "zes")):
        return verb[:-2]
    return verb[:-1] if verb.endswith("s") else None


def third_person(verb: str) -> str:
    """A base-form verb in the third person (`route` → `routes`, `match` → `matches`)."""
    if verb.endswith(("s", "sh", "ch", "x", "z")):
        return f"{verb}es"
    if verb.endswith("y") and verb[-2:-1] not in tuple("aeiou"):
        return f"{verb[:-1]}ies"
    return f"{verb}s"


@dataclass(frozen=True)
class Job:
    base: str | None  # "get the url parameter from a http.Request object": after "How do I …"; None: what it is
    third: str  # "returns the url parameter …", or "is a structure to track URL routing parameters": after "Which …"


def _action(clause: str) -> Job | None:
    """The job of a clause that starts with a verb (`returns …`, `will clean out …`, `can be used to set …`,
    `automatically route …`: past an adverb, the doc's verb as it is written), if it has one."""
    adverb, _, after = clause.partition(" ")
    if adverb.endswith("ly") and len(adverb) >= MIN_ADVERB_CHARS and after[:1].isalpha() and after[:1].islower():
        verb, _, tail = after.partition(" ")
        stem = base_form(verb) or verb
        found = Job(f"{adverb} {stem} {tail}", f"{adverb} {third_person(stem)} {tail}")
        return found if len(tail.split()) >= MIN_JOB_WORDS - 1 else None
    used = USED_TO.match(clause)
    if used:
        base = clause[used.end() :]
        return Job(base, clause) if len(base.split()) >= MIN_JOB_WORDS else None
    if clause.startswith("will "):
        base = clause[5:]
        verb, _, tail = base.partition(" ")
        third = f"{third_person(verb)} {tail}" if verb.isalpha() else base
    else:
        verb, _, tail = clause.partition(" ")
        stem = base_form(verb)
        if stem is None:
            return None
        base, third = f"{stem} {tail}".strip(), clause
    return Job(base, third) if len(base.split()) >= MIN_JOB_WORDS else None


def after_name(symbol: Symbol) -> str | None:
    """The doc's first sentence after the symbol's name, less its closing punctuation and what the doc calls the
    symbol ("CleanPath middleware will clean out …" → "will clean out …"); None when it does not start with the name.
    What jobs are read from."""
    name = symbol.name.split(".")[-1]
    sentence = first_sentence(symbol.doc).rstrip(".!?")
    if not sentence.startswith(f"{name} "):
        return None
    return KIND_NOUN.sub("", sentence[len(name) + 1 :], count=1)


def _name_as_verb(symbol: Symbol, rest: str) -> Job | None:
    """The job of a func whose doc uses its name as the verb ("Reset a routing context to its initial state"), the
    name put back ("resets a routing context …"); None for any other doc."""
    name = symbol.name.split(".")[-1]
    words = rest.split()
    if not (symbol.kind in ("func", "method") and name[1:].islower() and words and words[0] in ("a", "an", "the")):
        return None
    verb = name.lower()
    return Job(f"{verb} {rest}", f"{third_person(verb)} {rest}")


def asked_by(symbol: Symbol) -> str | None:
    """What the `reverse_lookup` probe asks by: the doc's first sentence after the name, the name kept as the verb
    where the doc uses it as one ("which method resets a routing context …", not "which method a routing context …")."""
    rest = after_name(symbol)
    named = _name_as_verb(symbol, rest) if rest is not None else None
    return named.third if named else rest


def job(symbol: Symbol) -> Job | None:
    """The job a symbol's doc gives it in its first sentence, if the sentence starts with its name: what it does
    (`URLParam returns …`, `Logger is a middleware that logs …`) or, where no verb says that, what it is (`RouteParams
    is a structure to track …`: `base` None, so no "How do I …" question is asked of it)."""
    rest = after_name(symbol)
    if rest is None:
        return None
    words = rest.split()
    if (named := _name_as_verb(symbol, rest)) is not None:
        return named if len(words) >= MIN_JOB_WORDS else None
    clause = IS_A_THAT.match(rest)
    found = _action(clause[1] if clause else rest)
    if found is None and IS_A.match(rest) and len(words) > MIN_JOB_WORDS:
        return Job(None, rest)
    if found is None and (useful := USEFUL.match(rest)):
        return Job(None, f"is {useful[1]}")
    return found


def inventions(symbol: Symbol, found: Job | None, taken: set[str]) -> list[str]:
    """Names a user might guess for this symbol that the framework does not have (`GetURLParam`, `URLParams`,
    `LoggerMiddleware`, a name built from the job: `GetUrlParameter`), in a fixed order."""
    receiver, _, name = symbol.name.rpartition(".")
    plural = name if name.endswith("s") else f"{name}s"
    guesses = [f"Get{name}", plural, f"{name}Handler", f"{name}Middleware", f"New{name}", f"{name}Func"]
    if name.startswith(("Get", "New", "Set")):
        guesses.insert(0, name[3:])
    if found is not None and found.base:
        words = [w for w in re.findall(r"[A-Za-z]+", found.base) if w.lower() not in ARTICLES][:3]
        guesses.insert(0, "".join(w[:1].upper() + w[1:].lower() for w in words))
    names = []
    for guess in guesses:
        full = f"{receiver}.{guess}" if receiver else guess
        if guess and guess[0].isupper() and full not in taken and guess not in taken and full not in names:
            names.append(full)
    return names


def misplaced(symbol: Symbol, home: str, packages: dict[str, set[str]], returned: str | None) -> list[tuple[str, str]]:
    """The symbol's own name where a user misremembers it, as (package short name, name) pairs the framework lacks:
    under its largest other package (`middleware.HandleFunc` for `chi.Mux.HandleFunc`), a method as a package func
    (`chi.RoutePattern` for `chi.Context.RoutePattern`), a func as a method of the type it `returned`
    (`chi.Mux.NewRouter` for `chi.NewRouter`). `packages`: each package's declared names, by short name. The models
    finetuned on chi invented names of these shapes most (docs/quality.md)."""
    leaf = symbol.name.rpartition(".")[2]
    others = sorted((p for p in packages if p != home), key=lambda p: (-len(packages[p]), p))
    guesses = [(others[0], leaf)] if others else []
    if symbol.kind == "method":
        guesses.append((home, leaf))
    elif symbol.kind == "func" and returned:
        guesses.append((home, f"{returned}.{leaf}"))
    return [(package, name) for package, name in guesses if name not in packages[package]]


def neighbours(symbol: Symbol, package_symbols: dict[str, Symbol]) -> list[tuple[Symbol, str]]:
    """Other documented symbols of the same package that this symbol's doc names, with the doc's sentence that names
    each: the contrast the framework's authors drew (`Middlewares.HandlerFunc` vs `Middlewares.Handler`)."""
    if symbol.kind not in ("func", "method"):
        return []
    receiver = symbol.name.split(".")[0] if "." in symbol.name else None
    found: list[tuple[Symbol, str]] = []
    sentences = prose_sentences(symbol.doc)
    for other in package_symbols.values():
        if other.name in (symbol.name, receiver) or not other.doc or other.kind not in ("func", "method"):
            continue
        shown = other.name.split(".")[-1] if receiver and other.name.startswith(f"{receiver}.") else other.name
        if shown == symbol.name.split(".")[-1]:
            continue  # `Context.URLParam`'s doc names itself, not the func `URLParam`
        pattern = re.compile(rf"(?<![\w.]){re.escape(shown)}(?![\w])")
        named = next((s for s in sentences if pattern.search(s) and "```" not in s), None)
        if named is not None and len(shown) > 2:
            found.append((other, named))
    return found
