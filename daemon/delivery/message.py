"""One recipient's email: fill the rendered slots, sign the links, build the MIME message
through the one builder, ``rules.mail`` (docs/delivery.md, "The message").

multipart/alternative (plain text first, HTML last), From/To/Subject/Date, a Message-ID
stable per outbox entry (a resend carries the same one, so mailbox providers can drop a
duplicate), ``List-Unsubscribe`` (the https one-click URL, plus a ``mailto:``: the user's own
``u-<token>@<bounces domain>`` when ``[bounces] domain`` is set, else
``[delivery] list_unsubscribe_mailto`` when configured),
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058) and
``List-Id``, ``Feedback-ID``. Links go to the links service: ``/u/{token}`` (the footer
page, also the one-click POST target) and ``/r/{token}`` (a signed click redirect). Every
header value passes ``rules.headers.header_value`` (in ``rules.mail``) before it is
encoded: one with CR, LF or another control character raises ``HeaderError`` and the
message is not built. Pure.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage

from ..rules import mail
from ..rules.bounces import VerpSigner
from ..rules.mail import sender_domain
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
    # ``[bounces] domain``: each user's mailto: List-Unsubscribe is ``u-<token>@`` it (and
    # ``mailto`` is ignored); "" for none
    bounce_domain: str = ""


def list_key(envelope: Envelope) -> str:
    """The List-Id's ``<id>``: plain ASCII whatever the channel's name."""
    label = re.sub(r"[^A-Za-z0-9-]+", "-", envelope.channel_name).strip("-").lower() or "channel"
    return f"{label}.{envelope.channel_id}.{sender_domain(envelope.sender)}"


def list_id(envelope: Envelope) -> str:
    return f"{envelope.channel_name} <{list_key(envelope)}>"


def links_for(
    rendered: Rendered, envelope: Envelope, recipient: Recipient, signer: Signer
) -> dict[str, str]:
    """The slot values that differ per recipient (URLs; not yet escaped)."""
    base = envelope.public_url.rstrip("/")
    unsubscribe_claim = Claim(Purpose.UNSUBSCRIBE, envelope.channel_id, recipient.kuloo_id)
    unsubscribe = f"{base}/u/{signer.sign(unsubscribe_claim)}"
    values = {"unsubscribe": unsubscribe, "frequency": unsubscribe + "#frequency"}
    for n, target in enumerate(rendered.links):
        token = signer.sign(
            Claim(Purpose.CLICK, envelope.channel_id, recipient.kuloo_id, target=target)
        )
        values[f"link{n}"] = f"{base}/r/{token}"
    return values


def unsubscribe_header(
    envelope: Envelope, recipient: Recipient, one_click: str, verp: VerpSigner | None = None
) -> str:
    """``List-Unsubscribe``: the one-click URL, then a ``mailto:`` — the user's signed
    ``u-`` address at the bounce domain (read by the bounce mailbox) when ``[bounces]``
    is set, else the configured ``list_unsubscribe_mailto``, else none."""
    value = f"<{one_click}>"
    if envelope.bounce_domain and verp is not None:
        try:
            local = verp.unsubscribe(recipient.kuloo_id)
        except ValueError:  # a KulooId that is no token (not 32 hex digits): the URL only
            return value
        return f"{value}, <mailto:{local}@{envelope.bounce_domain}>"
    if envelope.mailto:
        value += f", <mailto:{envelope.mailto}?subject=unsubscribe>"
    return value


def greeting(recipient: Recipient) -> str:
    return f"Hi {recipient.first_name.strip()}," if recipient.first_name.strip() else "Hello,"


def personalise(
    rendered: Rendered, envelope: Envelope, recipient: Recipient, signer: Signer
) -> tuple[str, str, dict[str, str]]:
    """(html, text, links) for one recipient: only string joins and HMACs."""
    links = links_for(rendered, envelope, recipient, signer)
    hello = greeting(recipient)
    html_values = {k: html.escape(v, quote=True) for k, v in links.items()}
    html_values["greeting"] = html.escape(hello)
    text_values = {**links, "greeting": hello}
    return rendered.html.fill(html_values), rendered.text.fill(text_values), links


Frame = mail.Head


def frame(rendered: Rendered, envelope: Envelope, kind: str = "sequence") -> Frame:
    """The per-message constant head of one rendered email for one envelope (computed once)."""
    return mail.head(
        kind=kind,
        channel_id=envelope.channel_id,
        sender=envelope.sender,
        subject=rendered.subject,
        list_label=envelope.channel_name,
        list_key=list_key(envelope),
    )


def build_bytes(
    rendered: Rendered,
    envelope: Envelope,
    recipient: Recipient,
    signer: Signer,
    *,
    msg_id: str,
    date: datetime,
    frame_: Frame | None = None,
    kind: str = "sequence",
    utf8: bool = False,
    verp: VerpSigner | None = None,
) -> bytes:
    """The whole message as SMTP wants it (CRLF, 7-bit): string joins, an HMAC per link,
    base64 per part (``rules.mail.assemble``). ``verp`` signs the ``mailto:`` address
    when the envelope has a ``bounce_domain``.

    Raises ``HeaderError`` when a header value (the recipient's name, say) holds a control
    character, and ``UnicodeEncodeError`` for a non-ASCII address."""
    f = frame_ or frame(rendered, envelope, kind)
    html_part, text_part, links = personalise(rendered, envelope, recipient, signer)
    name = " ".join(p for p in (recipient.first_name, recipient.last_name) if p).strip()
    unsubscribe = unsubscribe_header(envelope, recipient, links["unsubscribe"], verp)
    return mail.assemble(
        f,
        to=(name, recipient.email),
        date=date,
        msg_id=msg_id,
        text=text_part,
        html=html_part,
        list_unsubscribe=unsubscribe,
        utf8=utf8,
    )


def build(
    rendered: Rendered,
    envelope: Envelope,
    recipient: Recipient,
    signer: Signer,
    *,
    msg_id: str,
    date: datetime,
    kind: str = "sequence",
    verp: VerpSigner | None = None,
) -> EmailMessage:
    """The message parsed back (previews and tests): exactly the bytes that are sent."""
    data = build_bytes(
        rendered, envelope, recipient, signer, msg_id=msg_id, date=date, kind=kind, verp=verp
    )
    return email.message_from_bytes(data, policy=email.policy.default)


MAX_HTML_BYTES = 100 * 1024  # Gmail clips at about 102 KB, hiding the footer (unsubscribe too)
GREETING_CHARS = 200
LONGEST_KULOO_ID = "K" * 64  # the column's length


def largest_html_bytes(rendered: Rendered, envelope: Envelope, signer: Signer) -> int:
    """The HTML part's size for the longest recipient: the real ``public_url``, a 200-character
    greeting and tokens as long as they get (the longest KulooId)."""
    recipient = Recipient(LONGEST_KULOO_ID, "x@example.com")
    values = {
        k: html.escape(v, quote=True)
        for k, v in links_for(rendered, envelope, recipient, signer).items()
    }
    values["greeting"] = "x" * GREETING_CHARS
    return len(rendered.html.fill(values).encode("utf-8"))


def too_big(size: int) -> str:
    return (
        f"its HTML part would be {size / 1024:.0f} KB, over the {MAX_HTML_BYTES // 1024} KB "
        "that Gmail shows before clipping the footer (and the unsubscribe link): shorten it"
    )
