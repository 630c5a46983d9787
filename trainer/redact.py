"""Keeping credentials out of everything the product writes or prints.

Credentials reach the product only through the environment (SkyPilot `secrets:`, `--secret`, the shell). They are
never copied into configs, manifests, cards or logs; as a last line of defence every error line and traceback the
CLI prints passes through `redact`, which masks the current values of these variables, of every variable a config
named as holding an API key (`api_key`), and credentials in URLs.
"""

from __future__ import annotations

import os
import re

from trainer.errors import TrainerError

SECRET_ENV = (
    "WANDB_API_KEY",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "GITHUB_TOKEN",
)
MASK = "***"
URL_CREDENTIALS = re.compile(r"(?<=://)[^/\s:@]+(:[^/\s@]*)?@")
NO_KEY = "EMPTY"  # the openai client requires a key; a server started without keys accepts any
API_KEY_ENV: set[str] = set()  # the variables `api_key` has read keys from: masked like SECRET_ENV


def api_key(env_name: str | None, where: str) -> str:
    """The API key held by the variable `env_name`, or NO_KEY for a server that needs none (`env_name` None).

    `where` names the setting (`data.teacher.api_key_env`) in the error for a variable that is named but unset: a
    silent keyless request would fail later, far from the cause.
    """
    if env_name is None:
        return NO_KEY
    key = os.environ.get(env_name, "")
    if not key:
        raise TrainerError(
            f"{where}: the environment variable {env_name} is not set; set it, or name no variable for a server "
            "that needs no key"
        )
    API_KEY_ENV.add(env_name)
    return key


def secret_values() -> list[str]:
    """The values of SECRET_ENV and API_KEY_ENV set now, longest first (a value containing another is masked whole)."""
    values = {os.environ.get(name, "") for name in (*SECRET_ENV, *API_KEY_ENV)}
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def redact(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, MASK)
    return URL_CREDENTIALS.sub(f"{MASK}@", text)
