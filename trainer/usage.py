"""What the command line says about itself: a usage slip as one `error:` line, and `trainer --version`.

typer (click inside) would print a usage block and a boxed message, or, with our own error handling around it, a
traceback; a user fixes a slip faster from one line that names the option and the closest valid spelling.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import typer

from trainer.config_file import dotted_keys

# The libraries whose versions decide what a run computes, shown by --version beside requirements.lock's pins.
LIBRARIES = ("torch", "transformers", "trl", "peft", "bitsandbytes", "accelerate", "datasets", "tokenizers", "vllm")
LOCK_FILE = Path(__file__).resolve().parent.parent / "requirements.lock"  # present in a checkout, not in a wheel


def usage_error_line(exc: typer.TyperException) -> str:
    """A usage error (unknown command or option, bad or missing value) as one line naming the command and option."""
    ctx = getattr(exc, "ctx", None)
    where = f"{ctx.command_path}: " if ctx is not None else ""
    option = getattr(exc, "option_name", None)
    if option is not None and hasattr(exc, "possibilities"):  # an unknown option
        message = f"no such option {option}" + (_option_hint(option, exc.possibilities or [], ctx))
    else:
        message = exc.format_message().rstrip(".")
        message = message[:1].lower() + message[1:]
        if ". Did you mean " in message:  # an unknown command: typer's suggestion, in the same form as ours
            message = message.replace(". Did you mean ", " (did you mean ") + ")"
    return "error: " + where + " ".join(message.split())


def _option_hint(option: str, possibilities: list[str], ctx: typer.Context | None) -> str:
    """The command's own option closest to `option`, else the config key it names (`--max-steps` is
    `--set training.max_steps=…` on a stage command)."""
    if possibilities:
        return f" (did you mean {possibilities[0]}?)"  # the closest first
    takes_set = ctx is not None and any("--set" in param.opts for param in ctx.command.params)
    if not takes_set:
        return ""
    name = option.lstrip("-").replace("-", "_")
    named = [key for key in dotted_keys() if key.rpartition(".")[2] == name]
    return f" (did you mean --set {named[0]}=…?)" if named else ""


def version_text() -> str:
    """This package's version and the installed versions of the libraries that shape a run, each marked where it
    differs from requirements.lock."""
    locked = _locked_versions()
    lines = [f"trainer {importlib.metadata.version('trainer')}"]
    for name in LIBRARIES:
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        pin = locked.get(name)
        note = f" (requirements.lock: {pin})" if pin and pin != installed.split("+")[0] else ""
        if installed != "not installed" or pin:
            lines.append(f"  {name} {installed}{note}")
    return "\n".join(lines)


def _locked_versions() -> dict[str, str]:
    if not LOCK_FILE.is_file():
        return {}
    pins = {}
    for line in LOCK_FILE.read_text(encoding="utf-8").splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith("#"):
            pins[name.strip().lower()] = version.strip()
    return pins
