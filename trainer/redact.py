"""Keeping credentials out of everything the product writes or prints.

Credentials reach the product only through the environment (SkyPilot `secrets:`, `--secret`, the shell). They are
never copied into configs, manifests, cards or logs; as a last line of defence every error line and traceback the
CLI prints passes through `redact`, which masks the current values of these variables and credentials in URLs.
"""

from __future__ import annotations

import os
import re

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


def secret_values() -> list[str]:
    """The values of SECRET_ENV set now, longest first (a value containing another is masked whole)."""
    values = {os.environ.get(name, "") for name in SECRET_ENV}
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def redact(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, MASK)
    return URL_CREDENTIALS.sub(f"{MASK}@", text)
