"""The split: each conversation by its own hash, then held-out symbols and the recitation policy.

1. `assign_split`: train, validation or test from the conversation's own content hash (and `data.split_salt`), so
   adding a conversation never moves another one. Probes (`phrasings.PROBE_TEMPLATES`: a trained fact asked the
   other way round) all go to test: they are the seen group's questions, never training's; so do the examples of
   `data.test_examples_dir` (provenance `"split": "test"`).
2. Held-out symbols: `data.heldout_symbols_fraction` of the API index's symbols, each drawn by a hash of its key and
   the salt alone (adding a source or an example never reshuffles them), are held out of training entirely. A method
   is held out on its own draw and with its type (its answers name the receiver type). Every conversation about a
   held-out symbol (provenance `symbol`; `pkg.X#ExampleX` belongs to `pkg.X`), and every conversation whose text
   names one (`SymbolIndex.referenced`: a package overview listing it, another symbol's example calling it, a
   hand-written answer using it), goes to test with `"heldout": true` in its provenance. None is dropped.
3. Recitation: a test answer whose prose (fenced code aside) shares a span of `SPAN_WORDS` words with a training
   answer is recited, not known. Generated test conversations of seen symbols that share one move to train, until
   none does (a moved one is a training answer too); hand-written ones keep their split.
4. Then training and validation conversations whose answers share a span with a held-out answer (a sibling symbol
   with the same doc comment) join the held-out ones in test, until none does.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from trainer.api_index import CODE_FENCE, SymbolIndex
from trainer.data_config import DataConfig
from trainer.dataset import SPLITS, is_heldout
from trainer.synthesis.phrasings import PROBE_TEMPLATES

SPAN_WORDS = 12
WORD = re.compile(r"\w+")


def _position(salt: str, identifier: str) -> float:
    digest = hashlib.sha256(f"{salt}:{identifier}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(identifier: str, salt: str, validation_fraction: float, test_fraction: float) -> str:
    """Split from the example's own hash alone, so adding an example never moves another one."""
    position = _position(salt, identifier)
    if position < test_fraction:
        return "test"
    if position < test_fraction + validation_fraction:
        return "validation"
    return "train"


def heldout_symbols(symbols: Iterable[dict[str, Any]], salt: str, fraction: float) -> set[str]:
    """The keys (`import/path.Name`) of the held-out symbols: each drawn from its own key and the salt; a method also
    goes with its type."""

    def drawn(key: str) -> bool:
        return _position(f"{salt}:heldout", key) < fraction

    held = set()
    for symbol in symbols:
        key, name = f"{symbol['package']}.{symbol['name']}", symbol["name"]
        receiver = f"{symbol['package']}.{name.split('.')[0]}" if symbol["kind"] == "method" else key
        if drawn(key) or drawn(receiver):
            held.add(key)
    return held


def answers(messages: list[dict[str, Any]]) -> list[str]:
    """The assistant turns' texts."""
    return [m["content"] for m in messages if m["role"] == "assistant" and m.get("content")]


def prose_words(text: str) -> list[str]:
    """The words of a text outside fenced code blocks, case-folded: punctuation and spacing do not hide a span."""
    return WORD.findall(CODE_FENCE.sub(" ", text).lower())


def spans(text: str) -> Iterator[int]:
    """A hash of every run of SPAN_WORDS consecutive prose words (Python's hash: equal within one run)."""
    words = prose_words(text)
    return (hash(tuple(words[i : i + SPAN_WORDS])) for i in range(len(words) - SPAN_WORDS + 1))


def answer_spans(texts: list[str]) -> frozenset[int]:
    """The span hashes of a conversation's answers (a span never runs from one answer into the next)."""
    return frozenset(span for text in texts for span in spans(text))


def _owners(span_sets: Iterable[frozenset[int]]) -> dict[int, list[int]]:
    """Each span hash → the indices of the conversations that have it."""
    owners: dict[int, list[int]] = {}
    for index, found in enumerate(span_sets):
        for span in found:
            owners.setdefault(span, []).append(index)
    return owners


def _shared(owners: dict[int, list[int]], streamed: Iterable[frozenset[int]]) -> set[int]:
    """The indices in `owners` sharing a span with any of the streamed conversations."""
    return {index for found in streamed for span in owners.keys() & found for index in owners[span]}


def sharing(test_answers: list[list[str]], train_answers: Iterable[list[str]]) -> set[int]:
    """Indices of the test conversations (each a list of answers) sharing a SPAN_WORDS-word prose span with any
    training answer. Only the test side is indexed; the training answers stream past once."""
    return _shared(_owners(map(answer_spans, test_answers)), map(answer_spans, train_answers))


class _SpanCache:
    """Each row's answer spans, computed once: the policy below compares the splits several times."""

    def __init__(self) -> None:
        self.by_id: dict[str, frozenset[int]] = {}

    def __call__(self, row: dict[str, str]) -> frozenset[int]:
        found = self.by_id.get(row["id"])
        if found is None:
            found = self.by_id[row["id"]] = answer_spans(answers(json.loads(row["messages"])))
        return found


def _conversation_text(messages: list[dict[str, Any]]) -> str:
    """What a conversation shows the model, system turn aside; a tool call's string arguments read as code."""
    parts = [m.get("content") or "" for m in messages if m["role"] != "system"]
    for message in messages:
        for call in message.get("tool_calls") or []:
            parts.extend(f"`{v}`" for v in call["arguments"].values() if isinstance(v, str))
    return "\n".join(parts)


@dataclass
class SplitResult:
    by_split: dict[str, list[dict[str, str]]]
    heldout: dict[str, Any]  # the manifest's `heldout` section
    recitation: dict[str, Any]  # the manifest's `recitation` section


def _symbol_of(provenance: dict[str, Any]) -> str | None:
    symbol = provenance.get("symbol")
    return symbol.split("#")[0] if symbol else None


def _measure(by_split: dict[str, list[dict[str, str]]], spans: _SpanCache, grouped: bool = True) -> dict[str, Any]:
    """The recitation figures of a split: overall and, when `grouped`, per group (seen, heldout)."""
    test = by_split["test"]
    found = _shared(_owners(map(spans, test)), map(spans, by_split["train"]))

    def figures(indices: list[int]) -> dict[str, Any]:
        shared = sum(1 for i in indices if i in found)
        return {"test_answers": len(indices), "sharing_span": shared, "share": round(shared / max(1, len(indices)), 4)}

    if not grouped:
        return figures(list(range(len(test))))
    heldout = [is_heldout(row) for row in test]
    groups = {"seen": [i for i, h in enumerate(heldout) if not h], "heldout": [i for i, h in enumerate(heldout) if h]}
    return figures(list(range(len(test)))) | {"by_group": {name: figures(ids) for name, ids in groups.items()}}


def _marked_heldout(row: dict[str, str]) -> dict[str, str]:
    """A copy of the row with `"heldout": true` in its provenance (the caller's rows are not changed)."""
    return row | {"provenance": json.dumps(json.loads(row["provenance"]) | {"heldout": True}, ensure_ascii=False)}


def _generated_seen(row: dict[str, str]) -> bool:
    """Generated (templates, a teacher: provenance has a template) and not held out."""
    return "template" in json.loads(row["provenance"]) and not is_heldout(row)


def split_rows(rows: list[dict[str, str]], symbols: list[dict[str, Any]], data: DataConfig) -> SplitResult:
    """Each row's split (see the module doc); held-out rows get `"heldout": true` in their provenance."""
    by_split: dict[str, list[dict[str, str]]] = {name: [] for name in SPLITS}
    for row in rows:
        provenance = json.loads(row["provenance"])
        # A probe, or an example from data.test_examples_dir: a test question by what it is
        test_only = provenance.get("template") in PROBE_TEMPLATES or provenance.get("split") == "test"
        split = assign_split(row["id"], data.split_salt, data.validation_fraction, data.test_fraction)
        by_split["test" if test_only else split].append(row)
    # The split by hash alone, as it was before held-out symbols and the recitation policy:
    spans = _SpanCache()
    before = _measure(by_split, spans, grouped=False)
    held = heldout_symbols(symbols, data.split_salt, data.heldout_symbols_fraction)
    own, naming, moved_to_test = _route_heldout(by_split, held, symbols)
    moved = _keep_recitation_out(by_split, spans)
    shared = _hold_out_shared_text(by_split, spans)
    heldout = {
        "fraction": data.heldout_symbols_fraction,
        "symbols": len(held),
        "names": sorted(held),
        "conversations": own + len(naming) + len(shared),
        "about_heldout_symbol": own,
        "naming_heldout_symbol": {"count": len(naming), "records": naming},
        "sharing_heldout_text": {"count": len(shared), "records": shared},
        "moved_to_test": moved_to_test + len(shared),
    }
    recitation = _measure(by_split, spans) | {
        "span_words": SPAN_WORDS,
        "before": before,
        "moved_to_train": {"count": len(moved), "records": moved},
    }
    return SplitResult(by_split, heldout, recitation)


def _route_heldout(
    by_split: dict[str, list[dict[str, str]]], held: set[str], symbols: list[dict[str, Any]]
) -> tuple[int, list[str], int]:
    """Rows about a held-out symbol, and rows naming one, go to test marked held out. Returns how many were about
    one, the records of those naming one, and how many left train or validation."""
    if not held:
        return 0, [], 0
    index = SymbolIndex(symbols)  # all of them: `Mux.Mount` reads as a method only where `Mux` is known as a type
    own = 0
    naming: list[str] = []
    arriving: list[dict[str, str]] = []
    for name in SPLITS:
        staying = []
        for row in by_split[name]:
            provenance = json.loads(row["provenance"])
            # A generated row's unqualified names are its package's (hand-written rows have no package).
            text = _conversation_text(json.loads(row["messages"]))
            named = sorted(index.referenced(text, provenance.get("package")) & held)
            if _symbol_of(provenance) in held:
                own += 1
            elif named:
                naming.append(f"{row['source']}: names {', '.join(named)}")
            else:
                staying.append(row)
                continue
            (staying if name == "test" else arriving).append(_marked_heldout(row))
        by_split[name] = staying
    by_split["test"].extend(arriving)
    return own, naming, len(arriving)


def _keep_recitation_out(by_split: dict[str, list[dict[str, str]]], spans: _SpanCache) -> list[str]:
    """Moves generated test rows of seen symbols that share a span with a training answer to train, until none
    does (a moved row is a training answer too); returns what moved."""
    moved: list[str] = []
    arrived = by_split["train"]  # the training answers the test rows have not yet been compared with
    while arrived:
        test = by_split["test"]
        movable = [i for i, row in enumerate(test) if _generated_seen(row)]
        found = _shared(_owners(spans(test[i]) for i in movable), map(spans, arrived))
        leaving = {movable[i] for i in found}
        arrived = [row for i, row in enumerate(test) if i in leaving]
        by_split["test"] = [row for i, row in enumerate(test) if i not in leaving]
        by_split["train"].extend(arrived)
        moved.extend(row["source"] for row in arrived)
    return moved


def _hold_out_shared_text(by_split: dict[str, list[dict[str, str]]], spans: _SpanCache) -> list[str]:
    """Train and validation rows whose answers share a span with a held-out test answer (a sibling with the same doc
    comment, a hand-written answer quoting it) join the held-out rows in test, until none does; returns what moved."""
    moved: list[str] = []
    arrived = [row for row in by_split["test"] if is_heldout(row)]
    while arrived:
        heldout_spans = set().union(*map(spans, arrived))
        arrived = []
        for name in ("train", "validation"):
            staying = []
            for row in by_split[name]:
                (staying if heldout_spans.isdisjoint(spans(row)) else arrived).append(row)
            by_split[name] = staying
        arrived = [_marked_heldout(row) for row in arrived]
        moved.extend(f"{row['source']}: shares a {SPAN_WORDS}-word span with a held-out answer" for row in arrived)
        by_split["test"].extend(arrived)
    return moved
