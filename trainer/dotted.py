"""Dotted keys (`model.lora.r`, `tool_call.call_rate`) into nested mappings: a config as a tree, a report. The one
walker for reading, writing and flattening them."""

from __future__ import annotations

from typing import Any


class NotASection(TypeError):
    """A dotted key passes through a value that is not a mapping."""


def lookup(tree: Any, key: str) -> Any:
    """The value at `key`, or None where a part of it is missing."""
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def assign(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set `key` to `value`, making the sections on the way that are missing."""
    *parents, leaf = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
        if not isinstance(tree, dict):
            raise NotASection(f"{part!r} is not a section")
    tree[leaf] = value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Every leaf of `tree` under its dotted key."""
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= flatten(value, dotted + ".")
        else:
            flat[dotted] = value
    return flat
