"""How a stage command's config is assembled: the file, the run layout's keys (`--run-uri`), the user's `--set`s,
then the command's own flags, each remembered as typed so an error blames what the user wrote."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import typer

from trainer.config import Config
from trainer.config_file import Override, load_config
from trainer.dotted import lookup
from trainer.errors import TrainerError
from trainer.progress import on_terminal

# The config key each stage flag sets, filled by `config_flag` as the commands are declared: the flag is applied as
# that override and errors name the flag, not the key.
FLAG_KEYS: dict[str, str] = {}


def config_flag(key: str, flag: str, help: str, config_default: bool = False) -> Any:
    """The typer option of a stage flag that sets config `key`, the one place the flag is declared: `given_flags`
    finds its value. `config_default`: the help shows the config's value as the default."""
    FLAG_KEYS[flag.split("/")[0]] = key
    return typer.Option(flag, help=help, show_default=from_config(key) if config_default else True)


def given_flags(context: typer.Context) -> dict[str, object]:
    """The running command's config flags, as typed: one left at its default (not given) is None."""
    return {
        param.opts[0]: None if context.params[param.name] == param.default else context.params[param.name]
        for param in context.command.params
        if param.name and param.opts and param.opts[0] in FLAG_KEYS
    }


def _quiet_libraries() -> None:
    """Keep the output to progress bars and our own lines: libraries' deprecation notices are not the user's to fix."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft)\.")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(torch|bitsandbytes)\.")
    # bitsandbytes notes at import that an optional CPU kernel package is absent; the built-in kernel is used.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # Through the environment, not the libraries' setters: a command that loads no model imports neither.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if not on_terminal():  # "Loading weights" bars filled log files with carriage returns
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _flag_overrides(flags: dict[str, object], out_key: str | None) -> list[Override]:
    """The flags given (not None) as overrides of their keys, so they are validated and saved like any other key,
    and an error names the flag as typed."""
    keys = FLAG_KEYS | ({"--out": out_key} if out_key else {})
    overrides = []
    for flag, value in flags.items():
        if isinstance(value, bool):
            given_as = flag if value else f"--no-{flag.removeprefix('--')}"
            overrides.append(Override(f"{keys[flag]}={str(value).lower()}", given_as))
        elif value is not None:
            overrides.append(Override(f"{keys[flag]}={value}", f"{flag} {value}"))
    return overrides


def stage_config(
    config: Path, set_: list[str], run_uri: str | None, flags: dict[str, object] | None = None, out_key: str = ""
) -> Config:
    """The config of one stage command: the file, the run layout's keys (with --run-uri), the user's --set, then
    the command's own flags (`--out` sets `out_key`)."""
    from trainer.artifacts import run_overrides

    wiring = [Override(item, f"--run-uri {run_uri}") for item in run_overrides(run_uri)] if run_uri else []
    loaded = load_config(config, [*wiring, *set_, *_flag_overrides(flags or {}, out_key)])
    _quiet_libraries()
    return loaded


def from_config(key: str) -> str:
    """The `[default: …]` of a flag that overrides `key`: the config's value, built in as shown unless set."""
    value = lookup(Config().model_dump(mode="json"), key)
    return f"from {key}: {'none' if value is None else value}"


def endpoint_override(endpoints: list[str], model: str | None, api_key_env: str | None) -> str:
    """`--endpoint URL=MODEL` / `--endpoint URL --model MODEL` (repeatable), each with `--api-key-env`, as the value of
    evaluation.endpoints."""
    if model and all("=" in given for given in endpoints):
        raise TrainerError(f"--model {model}: every --endpoint names its own model (URL=MODEL); drop --model")
    parsed = []
    for given in endpoints:
        url, name = given.rsplit("=", 1) if "=" in given else (given, model)
        if not name:
            raise TrainerError(f"--endpoint {given}: name the served model: --endpoint URL=MODEL, or --model MODEL")
        parsed.append({"url": url, "model": name} | ({"api_key_env": api_key_env} if api_key_env else {}))
    return json.dumps(parsed)
