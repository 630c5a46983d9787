"""Caps on the generated conversations: per symbol (`data.generation.max_per_symbol`) and per package
(`data.generation.max_package_share`). A cap drops a kind's later phrasings before any kind loses its first: a
symbol keeps each fact's direction (which symbol does this job, what it does, its signature) and loses repeats. Among
equal phrasing numbers the order is a seeded hash, so the choice is stable from run to run and adding a conversation
moves no other. (A hash of the kind alone dropped whole kinds: chi's `Mux.Head` lost every "which method …" question;
asked for a symbol by its job, the model finetuned on chi invented a name in 7 of 15 answers where training had no
such question for the symbol, 9 of 74 where it had two: docs/quality.md.)"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable

from trainer.synthesis.generate import Generated


def _stable_order(items: list[Generated], salt: str) -> list[Generated]:
    """First phrasings of every (symbol, kind) before second ones, each rank in a seeded hash order."""
    seen: Counter[tuple[str, str]] = Counter()  # phrasings so far, by (symbol, kind)
    ranks = []
    for item in items:
        symbol, kind = item.key, item.provenance["template"]
        digest = hashlib.sha256(f"{salt}:{kind}:{symbol}".encode()).hexdigest()
        ranks.append((seen[symbol, kind], digest))
        seen[symbol, kind] += 1
    return [item for _, item in sorted(zip(ranks, items, strict=True), key=lambda pair: pair[0])]


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
