"""Methods promoted from unexported embedded types, listed on the embedding type as go/doc lists them.

`type Client struct{ *conn }` with `func (c *conn) Close() error` gives users `Client.Close`, and go/doc shows it
under Client; without it, evaluation's grounding check would call a real `client.Close()` invented. go/doc's rules
(go/doc/reader.go, mode 0): only an exported struct's direct embedded types of the same package count; a method the
struct declares itself wins; two embedded types giving the same name cancel out; methods of exported embedded
types are shown on those types, not here. The receiver becomes the embedding type, a pointer when the method's was
and the embedding was not.
"""

from __future__ import annotations

import re
from dataclasses import replace

from trainer.go.parser import Symbol, exported

RECEIVER = re.compile(r"^func \(([^)]*)\)")


def _customized(method: Symbol, type_name: str, embedded_as_pointer: bool) -> Symbol:
    receiver = RECEIVER.match(method.signature)
    if receiver is None:
        return replace(method, name=f"{type_name}.{method.name.split('.')[-1]}")
    parts = receiver.group(1).split(None, 1)
    variable, original = (parts[0] + " ", parts[1]) if len(parts) == 2 else ("", parts[0] if parts else "")
    star = "*" if original.startswith("*") and not embedded_as_pointer else ""
    signature = f"func ({variable}{star}{type_name})" + method.signature[receiver.end() :]
    return replace(method, name=f"{type_name}.{method.name.split('.')[-1]}", signature=signature)


def promoted_methods(embeds: dict[str, list[tuple[str, bool]]], methods: dict[str, dict[str, Symbol]]) -> list[Symbol]:
    """The promoted methods of one package. `embeds`: exported struct → its embedded local types; `methods`: type
    name → its declared exported methods by method name (exported and unexported types alike)."""
    promoted = []
    for type_name, embedded in embeds.items():
        offered: dict[str, list[tuple[Symbol, str, bool]]] = {}
        for origin, as_pointer in embedded:
            for method_name, method in methods.get(origin, {}).items():
                offered.setdefault(method_name, []).append((method, origin, as_pointer))
        own = methods.get(type_name, {})
        for method_name, offers in offered.items():
            if method_name in own or len(offers) > 1:
                continue  # the struct's own method wins; two at the same depth conflict and neither is shown
            method, origin, as_pointer = offers[0]
            if not exported(origin):
                promoted.append(_customized(method, type_name, as_pointer))
    return promoted
