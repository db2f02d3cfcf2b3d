"""The one message builder: every email Kuloo sends is assembled here (docs/delivery.md,
"The message").

Sequence and digest mail (``delivery.message``) and the signup confirmation
(``links.server``) both come through ``head`` and ``assemble``, so every message has the
same frame: From, Subject, (List-Id), MIME-Version, Content-Type multipart/alternative
(plain text first, HTML last), ``Feedback-ID: <channel id>:<kind>:kuloo``,
(``Auto-Submitted: auto-generated`` on notices), To, Date, Message-ID, and on list mail
``List-Unsubscribe`` with ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``
(RFC 8058). Every header value passes ``header_value`` (a control character refuses the
message) before it is encoded; a non-ASCII value becomes RFC 2047 encoded words of at
most 75 characters, folded with CRLF. A ``List-Id``'s ``<id>`` is always plain ASCII;
only its label is encoded. Pure and tortoise-free: a base module both capabilities use.
"""

from __future__ import annotations

import binascii
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, parseaddr

from .headers import header_value

KINDS = ("sequence", "digest", "confirmation")
NOTICE_KINDS = frozenset({"confirmation"})  # automatic mail (RFC 3834): Auto-Submitted
_SPECIALS = re.compile(r'[()<>\[\]:;@\\,."]')


def ascii_domain(domain: str) -> str:
    """A domain as it may stand in a header: punycode when it is not ASCII."""
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "kuloo.invalid"


def sender_domain(sender: str) -> str:
    """The domain of the sender's address (ASCII), ``kuloo.invalid`` when there is none."""
    return ascii_domain(parseaddr(sender)[1].rpartition("@")[2]) or "kuloo.invalid"


def envelope_address(addr: str) -> str:
    """An address for MAIL FROM / RCPT TO: the domain in punycode (the local part as it is)."""
    local, at, domain = addr.strip().rpartition("@")
    return f"{local}@{ascii_domain(domain)}" if at else addr.strip()


def encoded(field: str, value: str) -> str:
    """``value`` (already checked) as 7-bit header text: unchanged when ASCII, else RFC 2047
    encoded words of at most 75 characters, folded with CRLF (never a bare LF)."""
    if value.isascii():
        return value
    return Header(value, "utf-8", header_name=field).encode(linesep="\r\n", maxlinelen=76)


def phrase(field: str, value: str) -> str:
    """A display name: quoted when it holds specials, encoded when it is not ASCII."""
    if not value.isascii():
        return encoded(field, value)
    if _SPECIALS.search(value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def mailbox(field: str, name: str, addr: str) -> str:
    """``Name <addr>`` or ``addr``: the name quoted or encoded as needed, a non-ASCII domain
    in punycode (a non-ASCII local part stays, and fails where the message must be 7-bit)."""
    name, addr = header_value(field, name).strip(), header_value(field, addr).strip()
    local, at, domain = addr.rpartition("@")
    if at:
        addr = f"{local}@{ascii_domain(domain)}"
    return f"{phrase(field, name)} <{addr}>" if name else addr


def address(field: str, value: str) -> str:
    """``mailbox`` of a ``Name <addr>`` string (a channel's sender)."""
    return mailbox(field, *parseaddr(header_value(field, value)))


def list_id(label: str, key: str) -> str:
    """``label <key>``: the label encoded when not ASCII, the key always plain ASCII."""
    header_value("List-Id", label)
    header_value("List-Id", key)
    if not key.isascii():
        raise ValueError("a List-Id key must be ASCII")
    return f"{phrase('List-Id', label)} <{key}>"


@dataclass(frozen=True)
class Head:
    """The parts of a message that are the same for every recipient (computed once)."""

    head: bytes  # From, Subject, List-Id, MIME-Version, Content-Type, Feedback-ID, Auto-Submitted
    boundary: bytes
    list_mail: bool


def head(
    *,
    kind: str,
    channel_id: int,
    sender: str,
    subject: str,
    list_label: str = "",
    list_key: str = "",
) -> Head:
    """The constant head of one kind of message; list mail when ``list_key`` is given.

    Raises ``HeaderError`` when a value holds a control character."""
    if kind not in KINDS:
        raise ValueError(f"unknown message kind {kind!r}")
    # "=_" and "_" never occur in base64 output, so the boundary cannot collide with content.
    boundary = f"=_kuloo_{secrets.token_hex(12)}"
    lines = [
        f"From: {address('From', sender)}",
        f"Subject: {encoded('Subject', header_value('Subject', subject))}",
    ]
    if list_key:
        lines.append(f"List-Id: {list_id(list_label, list_key)}")
    lines += [
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        f"Feedback-ID: {int(channel_id)}:{kind}:kuloo",
    ]
    if kind in NOTICE_KINDS:
        lines.append("Auto-Submitted: auto-generated")
    return Head(
        ("\r\n".join(lines) + "\r\n").encode("ascii"), boundary.encode("ascii"), bool(list_key)
    )


def message_id(sender: str, tag: str = "kuloo") -> str:
    """A fresh Message-ID at the sender's domain."""
    return f"<{tag}.{secrets.token_hex(10)}@{sender_domain(sender)}>"


def _base64(text: str) -> bytes:
    # base64 in lines of 76 (RFC 2045): several times cheaper than quoted-printable here,
    # and this runs twice for every email.
    data = binascii.b2a_base64(text.encode("utf-8"), newline=False)
    return b"\r\n".join([data[i : i + 76] for i in range(0, len(data), 76)])


def assemble(
    h: Head,
    *,
    to: tuple[str, str],
    date: datetime,
    msg_id: str,
    text: str,
    html: str,
    list_unsubscribe: str = "",
    utf8: bool = False,
) -> bytes:
    """The whole message as SMTP wants it (CRLF, 7-bit; with ``utf8``, the To address may
    hold a UTF-8 local part, RFC 6532, for a relay that offers SMTPUTF8).

    ``to`` is (display name or "", address). Raises ``HeaderError`` for a control
    character and ``UnicodeEncodeError`` for a non-ASCII address."""
    lines = [
        f"To: {mailbox('To', *to)}",
        f"Date: {header_value('Date', format_datetime(date))}",
        f"Message-ID: {header_value('Message-ID', msg_id)}",
    ]
    if h.list_mail:
        lines += [
            f"List-Unsubscribe: {header_value('List-Unsubscribe', list_unsubscribe)}",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
        ]
    b = h.boundary
    return b"".join(
        (
            h.head,
            ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8" if utf8 else "ascii"),
            b"--",
            b,
            b'\r\nContent-Type: text/plain; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n",
            _base64(text),
            b"\r\n",
            b"--",
            b,
            b'\r\nContent-Type: text/html; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n",
            _base64(html),
            b"\r\n",
            b"--",
            b,
            b"--\r\n",
        )
    )
