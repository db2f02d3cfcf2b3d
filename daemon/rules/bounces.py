"""Bounces, complaints and mailto unsubscribes: the pure part (docs/delivery.md, "Bounces:
tokens and classification"); ``store.bounces`` applies what it reads, ``delivery.bounces``
reads the mailbox.

- **VERP local parts**, signed so a bounce names its message without guessing:
  bounces ``b-<kuloo_id hex>-<outbox id base36>-<mac>``, the ``mailto:`` List-Unsubscribe
  address ``u-<kuloo_id>-<mac>``, confirmations ``c-<channel>-<mac>``. ``mac`` is 13
  base32 characters (65 bits) of HMAC-SHA256 under the link-signing keys with a domain
  string of its own (so no link token is ever a VERP token, nor one kind another). Lower
  case and at most 64 characters; parsing folds case, since servers may.
- **Classification** of one inbound message (``classify``): RFC 3464 DSNs (and RFC 6533's
  UTF-8 ones) read with the standard ``email`` package (the VERP token first, then
  Final-Recipient); ARF feedback reports (RFC 5965) are complaints, except not-spam and
  auth-failure reports; mail to a ``u-`` address is an unsubscribe;
  flufl.bounce only finds the address of a bounce that is not a DSN. Never raises:
  anything it cannot read is ``unknown``.
- **The soft-bounce rule** (``soft_bounces_count_as_hard``) and **Sell's Sync error
  field** with a bounce in it (``sync_error_field``).

Pure: no I/O, no clock (times are passed in); imports ``cleaning`` and ``texts`` only.
"""

from __future__ import annotations

import base64
import email.message
import email.parser
import email.policy
import email.utils
import hashlib
import hmac
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import flufl.bounce

from .cleaning import clean_text
from .texts import MAX_LENGTH

DOMAIN = b"kuloo-verp/v1\x00"
MAC_CHARS = 13  # base32: 65 bits
MAX_LOCAL_PART = 64  # RFC 5321
MAX_REASON = 200
MAX_MESSAGE_BYTES = 10 * 1024 * 1024  # a bounce returning a bigger message is not read
SUCCESS_AFTER = timedelta(hours=72)  # accepted this long ago and never bounced: delivered

_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_KULOO_ID = re.compile(r"[0-9a-f]{1,32}")
_LOCAL = re.compile(
    r"(?:b-(?P<b_id>[0-9a-f]{1,32})-(?P<b_out>[0-9a-z]{1,13})"
    r"|u-(?P<u_id>[0-9a-f]{1,32})"
    r"|c-(?P<c_ch>[0-9]{1,18}))"
    r"-(?P<mac>[a-z2-7]{13})"
)


class VerpKind(StrEnum):
    BOUNCE = "b"  # the return path of one outbox message
    UNSUBSCRIBE = "u"  # the mailto: List-Unsubscribe address of one user
    CONFIRM = "c"  # the return path of a channel's confirmation emails (counted only)


@dataclass(frozen=True)
class VerpToken:
    kind: VerpKind
    kuloo_id: str = ""  # b and u
    outbox_id: int | None = None  # b
    channel: int | None = None  # c


def _base36(n: int) -> str:
    if n < 0:
        raise ValueError("a negative id has no VERP token")
    out = ""
    while True:
        n, digit = divmod(n, 36)
        out = _B36[digit] + out
        if n == 0:
            return out


class VerpSigner:
    """Signs VERP local parts with the newest link-signing key; verifies with any of them."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or any(len(k) < 16 for k in keys):
            raise ValueError("link-signing keys must each be at least 16 bytes")
        self._primed = tuple(hmac.new(k, DOMAIN, hashlib.sha256) for k in keys)

    def __repr__(self) -> str:  # never show key material
        return f"VerpSigner({len(self._primed)} key(s))"

    def _mac(self, index: int, body: str) -> str:
        h = self._primed[index].copy()
        h.update(body.encode("ascii"))  # pragma: no mutate (ascii by construction)
        return base64.b32encode(h.digest()[:9]).decode("ascii")[:MAC_CHARS].lower()

    def _sign(self, body: str) -> str:
        # at most 2 + 32 + 1 + 13 + 1 + 13 = 62 characters (MAX_LOCAL_PART is 64)
        return f"{body}-{self._mac(0, body)}"

    def bounce(self, kuloo_id: str, outbox_id: int) -> str:
        """``b-…``: the MAIL FROM local part of outbox message ``outbox_id``."""
        if not _KULOO_ID.fullmatch(kuloo_id):
            raise ValueError("a VERP token needs a KulooId of at most 32 lower-case hex digits")
        return self._sign(f"b-{kuloo_id}-{_base36(outbox_id)}")

    def unsubscribe(self, kuloo_id: str) -> str:
        """``u-…``: the local part of the user's ``mailto:`` List-Unsubscribe address."""
        if not _KULOO_ID.fullmatch(kuloo_id):
            raise ValueError("a VERP token needs a KulooId of at most 32 lower-case hex digits")
        return self._sign(f"u-{kuloo_id}")

    def confirm(self, channel: int) -> str:
        """``c-…``: the MAIL FROM local part of channel ``channel``'s confirmation emails."""
        if channel < 0 or len(str(channel)) > 18:
            raise ValueError("no VERP token for that channel id")
        return self._sign(f"c-{channel}")

    def verify(self, address: str) -> VerpToken | None:
        """The token a genuine VERP address (or local part) carries; None for anything else.

        Case is folded (a server may upper-case the address); a forged, truncated or
        re-spelled token (leading zeros) is refused; every key is checked, no early exit.
        """
        if not isinstance(address, str) or len(address) > 320:
            return None
        local = address.rpartition("@")[0] if "@" in address else address
        local = local.strip().strip("<>").lower()
        m = _LOCAL.fullmatch(local)
        if m is None:
            return None
        body = local[: -(MAC_CHARS + 1)]
        ok = False
        for index in range(len(self._primed)):
            ok |= hmac.compare_digest(self._mac(index, body), m["mac"])
        if not ok:
            return None
        if m["b_id"] is not None:
            if m["b_out"] != _base36(int(m["b_out"], 36)):
                return None
            return VerpToken(VerpKind.BOUNCE, m["b_id"], outbox_id=int(m["b_out"], 36))
        if m["u_id"] is not None:
            return VerpToken(VerpKind.UNSUBSCRIBE, m["u_id"])
        if str(int(m["c_ch"])) != m["c_ch"]:
            return None
        return VerpToken(VerpKind.CONFIRM, channel=int(m["c_ch"]))


# ----------------------------------------------------------------------------- classification


class Kind(StrEnum):
    HARD = "hard"  # the address is dead: the user becomes bounced
    SOFT = "soft"  # counted (soft_bounces_count_as_hard)
    MESSAGE = "message"  # only that message failed (policy, content, the relay's own problem)
    DELAYED = "delayed"  # a delay warning or a 4xx answer: not a bounce
    COMPLAINT = "complaint"  # an ARF feedback report: unsubscribe the user
    UNSUBSCRIBE = "unsubscribe"  # mail to a u- address: as the one-click link
    UNKNOWN = "unknown"  # anything else: counted, kept in the unknown folder


@dataclass(frozen=True)
class Bounce:
    kind: Kind
    status: str = ""  # "5.1.1", or a bare SMTP code ("550") when that is all there is
    reason: str = ""  # one clean line, at most MAX_REASON characters
    token: VerpToken | None = None  # the genuine VERP token that names the user/message
    recipient: str = ""  # the failed address as the report gives it ("" if none)

    @property
    def kuloo_id(self) -> str:
        return self.token.kuloo_id if self.token else ""

    @property
    def outbox_id(self) -> int | None:
        return self.token.outbox_id if self.token else None


# an enhanced status code standing alone: never the middle of an IP address ("192.0.2.153"
# holds "2.0.2") or of a longer dotted number; a sentence's full stop may follow it
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
# in a non-DSN bounce's text: a status that is not qmail's own "(#5.5.0)" annotation, and
# a bare reply code; qmail's annotation counts only when the text quotes no reply code
_TEXT_STATUS = re.compile(r"(?<![\d.#])([245])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_TEXT_CODE = re.compile(r"(?<![\d.#])\b([45]\d\d)\b(?!\.?\d)")
_BASIC = re.compile(r"\s*([245]\d\d)(?![\d.])")


def one_line(text: str, limit: int = MAX_REASON) -> str:
    """Remote text made safe for Sell: one line, cleaned, at most ``limit`` characters."""
    text = clean_text(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def classify_status(status: str, basic: str = "", at_rcpt: bool = False) -> Kind:
    """What a failed delivery's enhanced ``status`` (``"5.1.1"``) and bare SMTP code mean.

    Hard: 5.1.x, 5.2.1, or a bare 550/551/553 at RCPT (no finer status, or x.0.0).
    Soft: 4.x.x and 5.2.2 (mailbox full). Everything else fails only that message
    (5.7.x policy, 5.3.x/5.4.x system and network, 5.5.x/5.6.x, MAIL FROM refusals).
    """
    m = _STATUS.fullmatch(status.strip())
    if m is not None and (m[2], m[3]) != ("0", "0"):
        klass, subject, detail = m[1], m[2], m[3]
        if klass == "4":
            return Kind.SOFT
        if klass == "5":
            if subject == "1" or (subject, detail) == ("2", "1"):
                return Kind.HARD
            if (subject, detail) == ("2", "2"):
                return Kind.SOFT
            return Kind.MESSAGE
        return Kind.UNKNOWN  # a 2.x.x "failure" is nonsense
    klass = m[1] if m is not None else basic[:1]
    if klass == "4":
        return Kind.SOFT
    if klass == "5":
        return Kind.HARD if at_rcpt and basic in ("550", "551", "553") else Kind.MESSAGE
    return Kind.UNKNOWN


def classify_reply(code: int, text: str, stage: str) -> Bounce:
    """A relay's answer to our own SMTP transaction (no DSN): ``stage`` is ``"mail"``,
    ``"rcpt"`` or ``"data"``. A 4xx is not a bounce (``delayed``: retried); a refusal of
    MAIL FROM fails only that message; a 5xx is classified as its status says."""
    basic = str(code)
    found = _STATUS.search(text)
    status = found[0] if found else ""
    reason = one_line(f"{code} {text}")
    if not 400 <= code < 600:
        return Bounce(Kind.UNKNOWN, basic, reason)
    if code < 500:
        return Bounce(Kind.DELAYED, status or basic, reason)
    if stage == "mail":
        return Bounce(Kind.MESSAGE, status or basic, reason)
    kind = classify_status(status, basic, at_rcpt=stage == "rcpt")
    shown = status if status and not status.endswith(".0.0") else basic
    return Bounce(kind, shown, reason)


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _addresses(values: Iterable[object]) -> Iterator[str]:
    for _name, addr in email.utils.getaddresses([_text(v) for v in values]):
        if addr:
            yield addr


_MAILTO = re.compile(r"<mailto:([^>?\s]+)", re.IGNORECASE)

# field names, matched without regard to case by the email package
_ENVELOPE_FIELDS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
_ACTION, _STATUS_FIELD, _DIAGNOSTIC = "Action", "Status", "Diagnostic-Code"
_FINAL_RCPT, _ORIGINAL_RCPT = "Final-Recipient", "Original-Recipient"
_RETURN_PATH, _LIST_UNSUBSCRIBE, _TO = "Return-Path", "List-Unsubscribe", "To"
_MAIL_FROM, _RCPT_TO, _FEEDBACK_TYPE = "Original-Mail-From", "Original-Rcpt-To", "Feedback-Type"
_AUTO_SUBMITTED = "Auto-Submitted"
# feedback types that are no complaint: the receiver says "not spam", or reports a failed
# SPF/DKIM/DMARC check (RFC 6591); neither is a person asking to hear no more
NOT_COMPLAINTS = ("not-spam", "auth-failure")


def _find_token(
    signer: VerpSigner, candidates: Iterable[str], kinds: tuple[VerpKind, ...]
) -> VerpToken | None:
    for addr in candidates:
        token = signer.verify(addr)
        if token is not None and token.kind in kinds:
            return token
    return None


def _embedded_headers(msg: email.message.Message) -> Iterator[email.message.Message]:
    """The headers of the original message a report returns (whole, or headers only)."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list):
                for inner in payload:
                    if isinstance(inner, email.message.Message):
                        yield inner
        elif ctype in ("text/rfc822-headers", "text/global-headers"):
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                yield email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
                    raw, headersonly=True
                )


def _envelope(msg: email.message.Message) -> list[str]:
    """Where the report was delivered: our VERP address, if the MTA kept it."""
    return list(_addresses(v for f in _ENVELOPE_FIELDS for v in msg.get_all(f, [])))


def _original_return_paths(msg: email.message.Message) -> list[str]:
    return list(
        _addresses(v for inner in _embedded_headers(msg) for v in inner.get_all(_RETURN_PATH, []))
    )


def _status_blocks(msg: email.message.Message) -> list[email.message.Message] | None:
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            payload = part.get_payload()
            if isinstance(payload, list):
                return [b for b in payload if isinstance(b, email.message.Message)]
            return []
        if ctype == "message/global-delivery-status":
            return _global_blocks(part)
    return None


_BLANK_LINE = re.compile(r"\r?\n[ \t]*\r?\n")


def _global_blocks(part: email.message.Message) -> list[email.message.Message]:
    """RFC 6533's UTF-8 delivery status (SMTPUTF8 mail): the email package reads it as one
    message whose body holds the per-recipient blocks; split them as RFC 3464 does."""
    inner = part.get_payload()
    if not isinstance(inner, list) or not inner:
        return []
    first = inner[0]
    if not isinstance(first, email.message.Message):
        return []
    # Read from bytes, its UTF-8 is held as surrogate escapes: written back as the bytes
    # they were and decoded as UTF-8 (RFC 6533), so an address like jörg@… reads as one.
    text = first.as_bytes().decode("utf-8", "replace")
    parse = email.parser.Parser(policy=email.policy.compat32).parsestr
    return [parse(chunk, headersonly=True) for chunk in _BLANK_LINE.split(text) if chunk.strip()]


def _typed_value(value: object) -> str:
    """``rfc822; a@b`` → ``a@b``; ``smtp; 550 …`` → ``550 …``."""
    text = " ".join(_text(value).split())
    return text.partition(";")[2].strip() if ";" in text else text


def _from_dsn(
    msg: email.message.Message, blocks: list[email.message.Message], token: VerpToken | None
) -> Bounce:
    per_recipient = [b for b in blocks if b.get(_ACTION) is not None]
    if not per_recipient:
        return Bounce(Kind.UNKNOWN, reason="a delivery report with no recipient", token=token)
    rank = {"failed": 0, "delayed": 1}
    block = min(per_recipient, key=lambda b: rank.get(_text(b.get(_ACTION)).strip().lower(), 2))
    action = _text(block.get(_ACTION)).strip().lower()
    status = _text(block.get(_STATUS_FIELD)).strip()
    status = found[0] if (found := _STATUS.match(status)) else ""
    diagnostic = _typed_value(block.get(_DIAGNOSTIC))
    recipient = _typed_value(block.get(_FINAL_RCPT) or block.get(_ORIGINAL_RCPT))
    reason = one_line(diagnostic or f"{action} {status}".strip())
    basic_m = _BASIC.match(diagnostic)
    basic = basic_m[1] if basic_m else ""
    if not status:
        status = found[0] if (found := _STATUS.search(diagnostic)) else ""
    shown = status if status and not status.endswith(".0.0") else (basic or status)
    if action == "delayed":
        return Bounce(Kind.DELAYED, shown, reason, token, recipient)
    if action != "failed":
        # "delivered", "relayed", "expanded" (or nothing): no failure; the reason is never
        # empty, since an empty Action with no status and no diagnostic says nothing at all
        return Bounce(Kind.UNKNOWN, shown, reason or "a report with no action", token, recipient)
    at_rcpt = "rcpt to" in _notification_text(msg).lower()
    kind = classify_status(status, basic, at_rcpt=at_rcpt)
    return Bounce(kind, shown, reason, token, recipient)


def _notification_text(msg: email.message.Message) -> str:
    """The human-readable first part of a report (where Postfix says "in reply to RCPT TO")."""
    for part in msg.walk():
        if part.get_content_type() == "text/plain":
            raw = part.get_payload(decode=True)
            return bytes(raw or b"").decode("utf-8", "replace")[:20000]
    return ""  # pragma: no mutate (no text part: nothing quoted, however spelt)


def _report_type(msg: email.message.Message) -> str:
    return _text(msg.get_param("report-type")).lower()  # pragma: no mutate (any case, any default)


def _declares_dsn(msg: email.message.Message) -> bool:
    return msg.get_content_type() == "multipart/report" and _report_type(msg) == "delivery-status"


def _is_feedback_report(msg: email.message.Message) -> bool:
    if msg.get_content_type() == "multipart/report" and _report_type(msg) == "feedback-report":
        return True
    return any(p.get_content_type() == "message/feedback-report" for p in msg.walk())


def _feedback_fields(msg: email.message.Message) -> email.message.Message | None:
    for part in msg.walk():
        if part.get_content_type() == "message/feedback-report":
            payload = part.get_payload()
            if (
                isinstance(payload, list)
                and payload
                and isinstance(payload[0], email.message.Message)
            ):
                return payload[0]
    return None


def _from_feedback(signer: VerpSigner, msg: email.message.Message) -> Bounce:
    fields = _feedback_fields(msg)
    candidates: list[str] = []
    for inner in _embedded_headers(msg):
        candidates += _addresses(inner.get_all(_RETURN_PATH, []))
        for value in inner.get_all(_LIST_UNSUBSCRIBE, []):
            candidates += _MAILTO.findall(_text(value))
    if fields is not None:
        candidates += _addresses(fields.get_all(_MAIL_FROM, []))
    token = _find_token(signer, candidates, (VerpKind.BOUNCE, VerpKind.UNSUBSCRIBE))
    recipient = ""
    if fields is not None:
        recipient = next(_addresses(fields.get_all(_RCPT_TO, [])), "")
    if not recipient:
        recipient = next(
            (
                a
                for inner in _embedded_headers(msg)
                for a in _addresses(inner.get_all(_TO, []))
                if "@" in a  # 'To: "undisclosed"' names nobody
            ),
            "",
        )
    feedback_type = _text(fields.get(_FEEDBACK_TYPE)).strip().lower() if fields is not None else ""
    if feedback_type in NOT_COMPLAINTS:
        return Bounce(Kind.UNKNOWN, "", f"feedback report: {feedback_type}", token, recipient)
    return Bounce(Kind.COMPLAINT, "", one_line(feedback_type or "abuse", 40), token, recipient)


def _from_other(msg: email.message.Message, token: VerpToken | None) -> Bounce:
    """A bounce in a non-standard format: flufl.bounce finds the address (nothing more)."""
    try:
        temporary, permanent = flufl.bounce.all_failures(msg)
    except Exception:  # noqa: BLE001 — a detector's failure is an unknown message
        return Bounce(Kind.UNKNOWN, reason="unreadable bounce", token=token)
    found = sorted(permanent) or sorted(temporary)
    if not found:
        return Bounce(Kind.UNKNOWN, reason="not a bounce", token=token)
    recipient = found[0].decode("utf-8", "replace")  # pragma: no mutate (ASCII in practice)
    text = _notification_text(msg)
    status_m = _TEXT_STATUS.search(text)
    basic_m = _TEXT_CODE.search(text)
    if status_m is None and basic_m is None:
        status_m = _STATUS.search(text)  # qmail's "(#5.1.1)" when nothing else is quoted
    status = status_m[0] if status_m else ""
    basic = basic_m[1] if basic_m else ""
    if not permanent:
        return Bounce(Kind.DELAYED, status or basic, "a delay warning", token, recipient)
    if not status and not basic:
        return Bounce(Kind.UNKNOWN, "", "a bounce with no status", token, recipient)
    # the reason starts where the remote's answer does ("550 5.1.1 …"), to the end of its line
    start = min(m.start() for m in (status_m, basic_m) if m is not None)
    reason_line = text[start:].partition("\n")[0]
    kind = classify_status(status, basic, at_rcpt="rcpt to" in text.lower())
    if kind is Kind.UNKNOWN:
        return Bounce(Kind.UNKNOWN, "", "a bounce with no status", token, recipient)
    shown = status if status and not status.endswith(".0.0") else (basic or status)
    return Bounce(kind, shown, one_line(reason_line or shown), token, recipient)


def classify(raw: bytes, signer: VerpSigner) -> Bounce:
    """What one message that arrived at the bounce domain says. Never raises."""
    try:
        if len(raw) > MAX_MESSAGE_BYTES:
            return Bounce(Kind.UNKNOWN, reason="too big to be a bounce")
        return _classify(
            email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw), signer
        )
    except Exception:  # noqa: BLE001 — malformed mail of every kind ends here, never a crash
        return Bounce(Kind.UNKNOWN, reason="unreadable message")


def _classify(msg: email.message.Message, signer: VerpSigner) -> Bounce:
    if _is_feedback_report(msg):
        return _from_feedback(signer, msg)
    envelope = _envelope(msg)
    blocks = _status_blocks(msg)
    bounce_token = _find_token(
        signer, [*envelope, *_original_return_paths(msg)], (VerpKind.BOUNCE, VerpKind.CONFIRM)
    )
    if blocks is not None:
        return _from_dsn(msg, blocks, bounce_token)
    if _declares_dsn(msg):  # a DSN that lost its status part (cut short): not guessed at
        return Bounce(Kind.UNKNOWN, reason="a delivery report with no status", token=bounce_token)
    unsubscribe = _find_token(signer, envelope, (VerpKind.UNSUBSCRIBE,))
    automatic = _text(msg.get(_AUTO_SUBMITTED)).strip().lower() not in ("", "no")
    if unsubscribe is not None and not automatic:  # a vacation reply unsubscribes nobody
        return Bounce(Kind.UNSUBSCRIBE, reason="mailto unsubscribe", token=unsubscribe)
    return _from_other(msg, bounce_token)


# ----------------------------------------------------------------------------- soft bounces


@dataclass(frozen=True)
class Accepted:
    """A message the relay accepted for the user, and whether it bounced since."""

    at: datetime
    bounced: bool = False


def soft_bounces_count_as_hard(
    soft_bounces: Sequence[datetime],
    accepted: Sequence[Accepted],
    now: datetime,
    soft_limit: int = 5,
    soft_days: float = 7,
) -> bool:
    """``[bounces] soft_limit`` soft bounces with no successful delivery between them,
    spread over at least ``soft_days``, count as a hard bounce. A successful delivery is a
    message accepted at least 72 h before ``now`` that never bounced."""
    successes = [a.at for a in accepted if not a.bounced and a.at <= now - SUCCESS_AFTER]
    last_success = max(successes, default=None)
    run = sorted(t for t in soft_bounces if last_success is None or t > last_success)
    return len(run) >= soft_limit and run[-1] - run[0] >= timedelta(days=soft_days)


# ----------------------------------------------------------------------------- Sell's field


def bounce_text(status: str, reason: str, at: datetime) -> str:
    """``Email bounced: <status> <short reason> (<date>)``, one line."""
    words = " ".join(w for w in (one_line(status, 20), one_line(reason)) if w)
    return one_line(f"Email bounced: {words} ({at:%Y-%m-%d})", MAX_LENGTH)


def sync_error_field(sync_error: str | None, bounce: str | None) -> str:
    """Sell's Sync error field: the sync error (if any) · the bounce text (if any), one
    line of at most 250 characters. A long sync error is shortened, never the bounce."""
    error = " ".join(clean_text(sync_error or "").split())
    tail = one_line(bounce or "", MAX_LENGTH)
    if not tail:
        return one_line(error, MAX_LENGTH)
    if not error:
        return tail
    room = MAX_LENGTH - len(tail) - len(" · ")
    if room < 2:
        return tail
    if len(error) > room:
        error = error[: room - 1] + "…"
    return f"{error} · {tail}"
