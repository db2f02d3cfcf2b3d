"""Secrets in a wrapper whose repr and str are masked.

A Sell token, the link-signing key or an SMTP password travels as ``Secret`` from the
moment it is read until the one place that needs the raw value calls ``reveal()``.
Logging one, formatting one into an error or putting one in a control reply shows only
its masked form. ``logs.redact`` scrubs token-shaped strings as a second line of defence.
"""

from __future__ import annotations

import os
from pathlib import Path


def mask(value: str | None) -> str:
    """The form of a secret that may be shown: its length class and last four characters."""
    if not value:
        return ""
    if len(value) <= 8:
        return "****"
    return "****" + value[-4:]


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    @property
    def masked(self) -> str:
        return mask(self._value)

    def __repr__(self) -> str:
        return f"Secret({self.masked!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self):  # never pickled or copied out by accident
        raise TypeError("Secret cannot be pickled")


def read_credential(name: str, directory: str | os.PathLike | None = None) -> Secret:
    """Read a credential file, as systemd's LoadCredential= hands them over.

    ``directory`` defaults to ``$CREDENTIALS_DIRECTORY``. A trailing newline is dropped.
    Raises ``FileNotFoundError`` with a message that names the file, never its content.
    """
    base = directory or os.environ.get("CREDENTIALS_DIRECTORY")
    if not base:
        raise FileNotFoundError(
            f"credential {name!r}: no credentials directory (set [credentials] directory "
            "or run under systemd with LoadCredential=)"
        )
    path = Path(base) / name
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"credential file {str(path)!r} does not exist") from None
    return Secret(raw.rstrip("\r\n"))
