"""Secrets in a wrapper whose repr and str are masked.

A Sell token, the link-signing key or an SMTP password travels as ``Secret`` from the
moment it is read until the one place that needs the raw value calls ``reveal()``.
Logging one, formatting one into an error or putting one in a control reply shows only
its masked form.

Every secret value is also remembered, by value, in a process-wide registry: each
``Secret`` created adds its value, and the store adds every Sell token it holds when it
opens. ``scrub_known`` masks any of them found in a text, whatever its shape (letters
only, dotted, short) — and any run of at least ``MIN_RUN`` characters that starts like
one (a truncated echo). ``logs.redact`` calls it on every log value and on the final
rendered line, beside its shape-based rules.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

MIN_RUN = 8  # shorter runs are too common in ordinary text to mask
_known: dict[str, set[str]] = {}  # the first MIN_RUN characters -> the secrets starting so
_known_lock = threading.Lock()


def remember(value: str) -> None:
    """Add a secret value to the registry that ``scrub_known`` consults."""
    if isinstance(value, str) and len(value) >= MIN_RUN:
        with _known_lock:
            _known.setdefault(value[:MIN_RUN], set()).add(value)


def scrub_known(text: str) -> str:
    """``text`` with every known secret (or a run of one, from its start) replaced by ``****``."""
    if not _known:
        return text
    out: list[str] = []
    last = i = 0
    end = len(text) - MIN_RUN
    while i <= end:
        candidates = _known.get(text[i : i + MIN_RUN])
        if not candidates:
            i += 1
            continue
        run = max(_common_prefix(text, i, secret) for secret in tuple(candidates))
        out.append(text[last:i])
        out.append("****")
        i = last = i + run
    out.append(text[last:])
    return "".join(out)


def _common_prefix(text: str, start: int, secret: str) -> int:
    """How far ``secret`` runs on in ``text`` from ``start``; the first MIN_RUN characters
    are already known to match (they are the registry's key)."""
    n = MIN_RUN
    limit = min(len(secret), len(text) - start)
    while n < limit and text[start + n] == secret[n]:
        n += 1
    return n


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
        remember(value)

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
