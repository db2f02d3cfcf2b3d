"""One recipient's email: fill the rendered slots, sign the links, build the MIME message.

multipart/alternative (plain text first, HTML last), From/To/Subject/Date, a Message-ID
stable per outbox entry (a resend carries the same one, so mailbox providers can drop a
duplicate), ``List-Unsubscribe`` (the https one-click URL, plus a ``mailto:`` when
configured), ``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058) and
``List-Id``. Links go to the links service: ``/u/{token}`` (the footer page, also the
one-click POST target) and ``/r/{token}`` (a signed click redirect). Pure.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr

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


def message_id(outbox_id: int, channel_id: int, domain: str) -> str:
    """The Message-ID of an outbox entry: the same for every attempt of that entry."""
    return f"<kuloo.{channel_id}.{outbox_id}@{domain}>"


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


def build(rendered: Rendered, envelope: Envelope, recipient: Recipient, signer: Signer, *,
          msg_id: str, date: datetime) -> EmailMessage:
    html_part, text_part, links = personalise(rendered, envelope, recipient, signer)
    msg = EmailMessage()
    msg["From"] = envelope.sender
    name = " ".join(p for p in (recipient.first_name, recipient.last_name) if p).strip()
    msg["To"] = formataddr((name, recipient.email)) if name else recipient.email
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = msg_id
    msg["List-Id"] = list_id(envelope)
    unsubscribe = f"<{links['unsubscribe']}>"
    if envelope.mailto:
        unsubscribe += f", <mailto:{envelope.mailto}?subject=unsubscribe>"
    msg["List-Unsubscribe"] = unsubscribe
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text_part)
    msg.add_alternative(html_part, subtype="html")
    return msg
