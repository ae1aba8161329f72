"""The one secret scrubber: API keys and tokens never reach a file, a log line or a recorded reason.

``scrub(text, secrets)`` replaces the given values (an adapter's own key); ``redact_secrets(text)``
replaces the value of every secret-looking environment variable (``*_API_KEY``, ``*_TOKEN``,
``*_SECRET``, ``*_PASSWORD``), the last guard before a failure reason is written; ``SecretFilter``
applies it to every log record a handler writes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

# Environment variables whose values are never written: API keys and tokens.
SECRET_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
# Shorter values are not treated as secrets (they would blank out ordinary words).
MIN_SECRET_LEN = 8
MASK = "***"


def scrub(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every non-empty value of ``secrets`` replaced by ``***``."""
    for s in secrets:
        if s:
            text = text.replace(s, MASK)
    return text


def environment_secrets() -> list[str]:
    """The values of the secret-looking environment variables (see the module docstring)."""
    return [
        value
        for name, value in os.environ.items()
        if value and len(value) >= MIN_SECRET_LEN and name.upper().endswith(SECRET_SUFFIXES)
    ]


def redact_secrets(text: str) -> str:
    """``text`` with the value of every secret-looking environment variable replaced by ``***``."""
    return scrub(text, environment_secrets())


class SecretFilter(logging.Filter):
    """A logging filter that redacts secrets from every record a handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_secrets(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_secret_filter() -> None:
    """Put ``SecretFilter`` on every handler of the root logger (call after configuring logging)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(SecretFilter())
