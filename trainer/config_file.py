"""Reading a run config: the YAML files, their section includes and the `--set` overrides, into a validated `Config`.

A run config is a YAML mapping with the sections of `trainer.config.Config`. A section may be written inline or as
a string naming another YAML file (relative to the file that names it), which is how a training config names its
model config:

    model: ../model/tiny-debug.yaml
    training: {max_steps: 30}

`--set dotted.key=value` overrides are applied after the files are read; values are parsed as YAML
(`--set training.max_steps=5`, `--set model.quantization=null`). Unknown keys and wrong types are errors that
name the file (or the --set) and the key. What each key means, and how path values resolve, is `trainer/config.py`.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from trainer.config import SECTIONS, Config
from trainer.dotted import NotASection, assign
from trainer.errors import TrainerError, did_you_mean, problems_error

DEFAULT_CONFIG = Path("configs/training/default.yaml")
AUTO = "auto"  # the value of a key that asks for nothing in particular (`auto_keys`)
MAX_CONFIG_NODES = 100_000  # values after expanding YAML aliases: a real config has a few hundred


class _StrictLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML would keep the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()  # a set: a list made a wide hostile mapping quadratic (100,000 keys: about a minute)
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: SafeLoader's construct_mapping below refuses it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}: the earlier value would be lost", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_size(value: Any, where: str) -> None:
    """Refuse a tree that refers to itself or expands past MAX_CONFIG_NODES (an alias bomb) before validating it."""
    stack, visited, open_ids = [(value, False)], 0, set()
    while stack:
        node, leaving = stack.pop()
        if leaving:
            open_ids.discard(id(node))
            continue
        visited += 1
        if visited > MAX_CONFIG_NODES:
            raise TrainerError(f"{where}: more than {MAX_CONFIG_NODES:,} values after expanding aliases")
        if isinstance(node, dict | list):
            if id(node) in open_ids:
                raise TrainerError(f"{where}: a YAML alias refers to a value that contains it")
            open_ids.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in (node.values() if isinstance(node, dict) else node))


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainerError(f"{path}: config file not found") from None
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8, or a NUL in the path
        raise TrainerError(f"{path}: cannot read config: {exc}") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TrainerError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:
        raise TrainerError(f"{path}: invalid YAML: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise TrainerError(f"{path}: invalid YAML: {str(exc).split(';')[0]}") from None
    _check_size(data, str(path))
    return data


def _read_mapping(path: Path) -> dict[str, Any]:
    data = _read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TrainerError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
    return data


class Override(NamedTuple):
    """One `dotted.key=value` assignment and how the user typed it (`--set …`, `--limit 0`), which errors name."""

    assignment: str
    given_as: str


def _as_override(item: str | Override) -> Override:
    return item if isinstance(item, Override) else Override(item, f"--set {item}")


def _apply_override(tree: dict[str, Any], override: Override) -> str:
    key, sep, raw = override.assignment.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise TrainerError(f"{override.given_as}: expected dotted.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    try:
        assign(tree, key, value)
    except NotASection as exc:
        raise TrainerError(f"{override.given_as}: {exc}") from None
    return key


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The config model inside a field's type (`X`, `X | None`, `list[X]`), if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((found for arg in typing.get_args(annotation) if (found := _model_in(arg))), None)


def _keys_under(loc: Sequence[str | int]) -> list[str]:
    """The key names valid at `loc` (a section's, a list item's) for a "did you mean"; [] where it is not a section."""
    model: type[BaseModel] | None = Config
    for part in loc:
        if isinstance(part, int):  # an item of a list of sections
            continue
        field = model.model_fields.get(part) if model else None
        model = _model_in(field.annotation) if field else None
    return list(model.model_fields) if model else []


def _leaf_fields(model: type[BaseModel] = Config, prefix: str = "") -> dict[str, FieldInfo]:
    """Every key of the config as `section.key` (sections inside sections spelled out), with its field."""
    fields: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        inner = _model_in(field.annotation)
        fields |= _leaf_fields(inner, f"{prefix}{name}.") if inner else {f"{prefix}{name}": field}
    return fields


def dotted_keys() -> list[str]:
    """Every key of the config as `section.key` (sections inside sections spelled out)."""
    return list(_leaf_fields())


def _admits(annotation: Any, value: str) -> bool:
    """Whether `value` is one of the literals of a field's type (`Literal["auto"] | DtypeName`, `bool | Literal`)."""
    if typing.get_origin(annotation) is Literal:
        return value in typing.get_args(annotation)
    return any(_admits(arg, value) for arg in typing.get_args(annotation))


@cache
def auto_keys() -> tuple[str, ...]:
    """The keys whose type admits `auto` (AUTO): a value that asks for nothing in particular, each stage choosing
    for its machine. A `str` key (`model.revision`, `training.resume`) is not one: there `auto` is a name or a path
    its stage reads."""
    return tuple(key for key, field in _leaf_fields().items() if _admits(field.annotation, AUTO))


def load_config(path: Path | None = None, overrides: Sequence[str | Override] = ()) -> Config:
    """Read a run config, resolve section includes, apply overrides (a plain string is a `--set`) and validate."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    tree = _read_mapping(path)
    origin = {section: str(path) for section in tree}
    for section, value in list(tree.items()):
        if isinstance(value, str) and section in SECTIONS:
            included = path.parent / value
            try:
                tree[section] = _read_mapping(included)
            except TrainerError as exc:
                raise TrainerError(f"{path}: {section}: {exc}") from None
            origin[section] = str(included)
    given_as = {}
    for item in map(_as_override, overrides):
        given_as[_apply_override(tree, item)] = item.given_as
    try:
        config = Config.model_validate(tree)
        config._overrides = given_as
        return config
    except ValidationError as exc:
        lines = []
        # A default made from another key is not made once that key is wrong: its error is the one to show.
        for err in (e for e in exc.errors() if e["type"] != "default_factory_not_called"):
            key = ".".join(str(part) for part in err["loc"])
            source = next(
                (given_as[k] for k in given_as if key == k or key.startswith(k + ".") or k.startswith(key + ".")),
                origin.get(str(err["loc"][0]), str(path)),
            )
            message = err["msg"]
            if err["type"] == "extra_forbidden":
                message = "unknown key" + did_you_mean(str(err["loc"][-1]), _keys_under(err["loc"][:-1]))
            lines.append(f"{source}: {key}: {message}")
        raise problems_error("invalid config", lines) from None


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config next to a run's outputs, so every artifact says how it was made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
