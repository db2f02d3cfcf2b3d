"""One recipient's email: fill the rendered slots, sign the links, build the MIME message.

multipart/alternative (plain text first, HTML last), From/To/Subject/Date, a Message-ID
stable per outbox entry (a resend carries the same one, so mailbox providers can drop a
duplicate), ``List-Unsubscribe`` (the https one-click URL, plus a ``mailto:`` when
configured), ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058) and
``List-Id``. Links go to the links service: ``/u/{token}`` (the footer page, also the
one-click POST target) and ``/r/{token}`` (a signed click redirect). Every header value
passes ``rules.headers.header_value`` before it is encoded: one with CR, LF or another
control character raises ``HeaderError`` and the message is not built. Pure.
"""

from __future__ import annotations

import binascii
import email
import email.policy
import html
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr

from ..rules.headers import header_value
from ..tokens import Claim, Purpose, Signer
from .render import Rendered


@dataclass(frozen=True)
class Recipient:
    kuloo_id: str
    email: str
    first_name: str = ""
    last_name: str = ""


@dataclass(frozen=True)
class Envelope:
    """Who sends, on which list, where the links point."""

    channel_id: int
    channel_name: str
    sender: str
    public_url: str  # the links service's base URL, no trailing slash
    mailto: str = ""  # an address for a mailto: List-Unsubscribe; "" for none


def sender_domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    return address.rpartition("@")[2] or "kuloo.invalid"


def list_id(envelope: Envelope) -> str:
    label = re.sub(r"[^A-Za-z0-9-]+", "-", envelope.channel_name).strip("-").lower() or "channel"
    return f"{envelope.channel_name} <{label}.{envelope.channel_id}.{sender_domain(envelope.sender)}>"


def links_for(rendered: Rendered, envelope: Envelope, recipient: Recipient, signer: Signer) -> dict[str, str]:
    """The slot values that differ per recipient (URLs; not yet escaped)."""
    base = envelope.public_url.rstrip("/")
    unsubscribe = f"{base}/u/{signer.sign(Claim(Purpose.UNSUBSCRIBE, envelope.channel_id, recipient.kuloo_id))}"
    values = {"unsubscribe": unsubscribe, "frequency": unsubscribe + "#frequency"}
    for n, target in enumerate(rendered.links):
        token = signer.sign(Claim(Purpose.CLICK, envelope.channel_id, recipient.kuloo_id, target=target))
        values[f"link{n}"] = f"{base}/r/{token}"
    return values


def greeting(recipient: Recipient) -> str:
    return f"Hi {recipient.first_name.strip()}," if recipient.first_name.strip() else "Hello,"


def personalise(rendered: Rendered, envelope: Envelope, recipient: Recipient, signer: Signer) -> tuple[str, str, dict[str, str]]:
    """(html, text, links) for one recipient: only string joins and HMACs."""
    links = links_for(rendered, envelope, recipient, signer)
    hello = greeting(recipient)
    html_values = {k: html.escape(v, quote=True) for k, v in links.items()}
    html_values["greeting"] = html.escape(hello)
    text_values = {**links, "greeting": hello}
    return rendered.html.fill(html_values), rendered.text.fill(text_values), links


def _header_text(value: str) -> str:
    """A header value as 7-bit text: RFC 2047 encoded only when it is not ASCII."""
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(maxlinelen=998)


def _address(value: str) -> str:
    name, addr = parseaddr(value)
    return formataddr((name, addr), charset="utf-8") if name else addr


@dataclass(frozen=True)
class Frame:
    """The per-message constant MIME parts of one rendered email for one envelope (computed once)."""

    head: bytes  # From, Subject, List-Id, MIME-Version, Content-Type
    boundary: bytes
    list_post: bytes


def frame(rendered: Rendered, envelope: Envelope) -> Frame:
    # "=_" and "_" never occur in base64 output, so the boundary cannot collide with content.
    boundary = f"=_kuloo_{secrets.token_hex(12)}"
    head = (f"From: {_address(header_value('From', envelope.sender))}\r\n"
            f"Subject: {_header_text(header_value('Subject', rendered.subject))}\r\n"
            f"List-Id: {_header_text(header_value('List-Id', list_id(envelope)))}\r\n"
            "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n')
    return Frame(head.encode("ascii"), boundary.encode("ascii"),
                 b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")


def _base64(text: str) -> bytes:
    # base64 in lines of 76 (RFC 2045): several times cheaper than quoted-printable here,
    # and this runs twice for every email.
    data = binascii.b2a_base64(text.encode("utf-8"), newline=False)
    return b"\r\n".join([data[i:i + 76] for i in range(0, len(data), 76)])


def build_bytes(rendered: Rendered, envelope: Envelope, recipient: Recipient, signer: Signer, *,
                msg_id: str, date: datetime, frame_: Frame | None = None) -> bytes:
    """The whole message as SMTP wants it (CRLF, 7-bit): string joins, an HMAC per link,
    base64 per part.

    Raises ``HeaderError`` when a header value (the recipient's name, say) holds a control
    character, and ``UnicodeEncodeError`` for a non-ASCII address."""
    f = frame_ or frame(rendered, envelope)
    html_part, text_part, links = personalise(rendered, envelope, recipient, signer)
    name = " ".join(p for p in (recipient.first_name, recipient.last_name) if p).strip()
    name = header_value("To", name)
    address = header_value("To", recipient.email)
    to = formataddr((name, address), charset="utf-8") if name else address
    unsubscribe = f"<{links['unsubscribe']}>"
    if envelope.mailto:
        unsubscribe += f", <mailto:{envelope.mailto}?subject=unsubscribe>"
    b = f.boundary
    return b"".join((
        f.head,
        f"To: {to}\r\nDate: {header_value('Date', format_datetime(date))}\r\n"
        f"Message-ID: {header_value('Message-ID', msg_id)}\r\n"
        f"List-Unsubscribe: {header_value('List-Unsubscribe', unsubscribe)}\r\n".encode("ascii"),
        f.list_post, b"\r\n",
        b"--", b, b"\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n", _base64(text_part), b"\r\n",
        b"--", b, b"\r\nContent-Type: text/html; charset=\"utf-8\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n", _base64(html_part), b"\r\n",
        b"--", b, b"--\r\n",
    ))


def build(rendered: Rendered, envelope: Envelope, recipient: Recipient, signer: Signer, *,
          msg_id: str, date: datetime) -> EmailMessage:
    """The message parsed back (previews and tests): exactly the bytes that are sent."""
    data = build_bytes(rendered, envelope, recipient, signer, msg_id=msg_id, date=date)
    return email.message_from_bytes(data, policy=email.policy.default)
