"""Signed link tokens: what delivery puts in emails and the links service verifies.

One module, shared by ``delivery`` (signs) and ``links`` (verifies), so the two can never
disagree about the format. A token is opaque and URL-safe:

    base64url(payload) "." base64url(HMAC-SHA256(key, "kuloo-link/v1" NUL payload))

where ``payload`` is compact JSON ``[purpose, channel, kuloo_id, target, expires]``.
The MAC covers the purpose, so a click token is never an unsubscribe token; the user is
named by their KulooId (so tokens survive a move to PostgreSQL); ``target`` is
the redirect destination for click links ("" otherwise); ``expires`` is a Unix time or 0
for never (unsubscribe tokens never expire: a years-old email must still unsubscribe).

Keys come from the ``link-signing-key`` credential, one per line, newest first: the first
signs, all verify (rotation without breaking mail already sent). Comparison is
constant-time. Pure: standard library only, time is passed in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import json.encoder
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from .secrets import Secret

DOMAIN = b"kuloo-link/v1\x00"
MAX_TOKEN_CHARS = 4096  # a click target may be a long URL; anything longer is not ours


class Purpose(StrEnum):
    UNSUBSCRIBE = "u"  # the footer page (unsubscribe and frequency choices) and RFC 8058 one-click
    CLICK = "r"  # a tracked link: redirect to ``target``
    CONFIRM = "c"  # double opt-in confirmation of a signup


class BadToken(ValueError):
    """Tampered, malformed, signed with an unknown key, or expired. Says nothing more."""


@dataclass(frozen=True)
class Claim:
    purpose: Purpose
    channel: int
    kuloo_id: str
    target: str = ""
    expires: int = 0  # Unix time; 0 = never

    def expired(self, now: datetime) -> bool:
        return self.expires != 0 and now.timestamp() >= self.expires


_json_str = json.encoder.encode_basestring_ascii  # a JSON string literal, ASCII only (C)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or any(
        c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in text
    ):
        raise BadToken("not a token")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise BadToken("not a token") from None
    if _b64(data) != text:  # unused low bits set: a second spelling of a genuine token
        raise BadToken("not a token")
    return data


def keys_from_secret(secret: Secret) -> tuple[bytes, ...]:
    """The keys of a ``link-signing-key`` credential: one per non-blank line, newest first."""
    keys = tuple(line.strip().encode() for line in secret.reveal().splitlines() if line.strip())
    if not keys:
        raise ValueError("the link-signing key credential is empty")
    return keys


class Signer:
    """Signs with the newest key, verifies with any of them."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or any(len(k) < 16 for k in keys):
            raise ValueError("link-signing keys must each be at least 16 bytes")
        self._keys = tuple(keys)
        # HMAC state after the key and the domain, copied per token (signing is per recipient).
        self._primed = tuple(hmac.new(k, DOMAIN, hashlib.sha256) for k in self._keys)

    @classmethod
    def from_secret(cls, secret: Secret) -> Signer:
        return cls(keys_from_secret(secret))

    def __repr__(self) -> str:  # never show key material
        return f"Signer({len(self._keys)} key(s))"

    def _mac(self, index: int, payload: bytes) -> bytes:
        h = self._primed[index].copy()
        h.update(payload)
        return h.digest()

    def sign(self, claim: Claim) -> str:
        # Exactly json.dumps([...], separators=(",", ":"), ensure_ascii=True), built directly:
        # this runs for every link of every email.
        payload = (
            f'["{Purpose(claim.purpose).value}",{int(claim.channel)},{_json_str(claim.kuloo_id)},'
            f"{_json_str(claim.target)},{int(claim.expires)}]"
        ).encode("ascii")
        return f"{_b64(payload)}.{_b64(self._mac(0, payload))}"

    def verify(self, token: str, now: datetime, purpose: Purpose | None = None) -> Claim:
        """The claim a genuine, unexpired token carries; ``BadToken`` otherwise."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
            raise BadToken("not a token")
        head, tail = token.split(".")
        payload, mac = _unb64(head), _unb64(tail)
        # Check every key (no early exit) so timing does not tell which one matched.
        ok = False
        for index in range(len(self._keys)):
            ok |= hmac.compare_digest(self._mac(index, payload), mac)
        if not ok:
            raise BadToken("bad signature")
        try:
            raw_purpose, channel, kuloo_id, target, expires = json.loads(payload)
            claim = Claim(Purpose(raw_purpose), channel, kuloo_id, target, expires)
        except (ValueError, TypeError):
            raise BadToken("not a token") from None
        if not (
            isinstance(claim.channel, int)
            and isinstance(claim.kuloo_id, str)
            and isinstance(claim.target, str)
            and isinstance(claim.expires, int)
        ):
            raise BadToken("not a token")
        if purpose is not None and claim.purpose != purpose:
            raise BadToken("wrong kind of link")
        if claim.expired(now):
            raise BadToken("expired")
        return claim
