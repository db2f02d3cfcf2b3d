"""Serve the links app inside the daemon: bind, hypercorn over our listener, confirmation emails.

``app`` binds ``[links] listen`` first (``open_listener``: so port 0 works and the bound
address is known before READY=1, and ``status`` and delivery's links can use it when
``public_url`` is empty), after checking that the open-file limit leaves room beyond
``links.max_connections``, then hands the socket to ``LinksServer``; ``serve`` (started
with ``nursery.start``) binds it itself when it was given none, then reports started.
hypercorn serves through ``listener`` (the connection cap and the whole-request deadline).
``stop()`` lets hypercorn finish the requests in flight (bounded by
``daemon.shutdown_grace_seconds``).

Signup confirmations leave through delivery's transport (SMTP or Maildir: the narrow
``ConfirmationMail`` protocol, as links may not import delivery), one at a
time from a bounded queue in a worker thread: a slow relay never slows an HTTP answer,
and nothing in the answer depends on the email. One address gets at most one
confirmation per channel per ``links.confirm_resend_minutes`` (a ``+tag`` is ignored:
``victim+1@`` and ``victim+2@`` are one mailbox), and one client address causes at most
``links.signup_per_hour`` of them. An address that bounced (a user of the channel with it
is bounced) gets none, while the requester is answered as for any signup. With ``[bounces]
domain`` set, the return path is the channel's ``c-<token>@<domain>`` (its bounces are
counted, docs/delivery.md, "Bounces and complaints"). The email is built by the one
builder, ``rules.mail`` (docs/delivery.md, "The message"). It carries no text the
requester typed (no name in the greeting or in ``To:``): the names travel in the signed
claim only.
"""

from __future__ import annotations

import email
import email.policy
import html
import logging
import socket
from collections import OrderedDict
from datetime import datetime
from email.message import EmailMessage
from email.utils import parseaddr
from typing import Protocol

import structlog
import trio

from .. import config as config_mod
from ..config import parse_listen
from ..rules import mail
from ..rules.bounces import VerpSigner
from ..rules.headers import HeaderError
from ..rules.signing import DkimKeyError, aligned, misaligned
from ..services import Services
from ..store import bounces as bounce_store
from ..store.channels import Channel
from ..store.health import StoreUnavailable
from ..tokens import keys_from_secret
from ..vocabulary import email_key
from .app import LinksApp
from .limits import ChangeLimiter
from .listener import CappedListener, EdgeConfig, check_open_files, serve
from .pages import HSTS

log = structlog.get_logger("kuloo.links")

QUEUE_SIZE = 200
COOLDOWN_KEYS = 50_000


def bind(listen: str) -> tuple[socket.socket, str]:
    """A listening TCP socket for ``HOST:PORT`` and the URL of the address it got."""
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
    return sock, f"http://{shown}:{bound_port}"


def cooldown_key(address: str) -> str:
    """The mailbox an address reaches for the resend cooldown: its email key without a ``+tag``."""
    local, at, domain = email_key(address).rpartition("@")
    return f"{local.split('+', 1)[0] or local}{at}{domain}"


def open_listener(listen: str, max_connections: int) -> tuple[socket.socket, str]:
    """``bind``, before the daemon's task nursery: a failure is one clear line. An
    open-file limit too low for ``max_connections`` is refused first."""
    check_open_files(max_connections)
    try:
        return bind(listen)
    except OSError as exc:
        raise RuntimeError(f"links.listen: cannot listen on {listen} ({exc.strerror})") from None


class _Outcome(Protocol):
    @property
    def value(self) -> str: ...


class _Sent(Protocol):
    @property
    def outcome(self) -> _Outcome: ...


class MailTransport(Protocol):
    def open(self) -> None: ...
    def send(self, data: bytes, sender: str, recipient: str) -> _Sent: ...
    def close(self) -> None: ...


class ConfirmationMail(Protocol):
    """What the links service needs of delivery: the links' public address, and a transport."""

    def public_url(self) -> str: ...
    def transport(self) -> MailTransport: ...


def confirmation_texts(channel: Channel, url: str) -> tuple[str, str]:
    """(text, html) of the confirmation: no text the requester typed, only the channel's."""
    text = (
        "Hello,\n\n"
        f"Someone — hopefully you — asked to receive {channel.name} at this address.\n"
        f"To confirm, open this link and press the button:\n\n{url}\n\n"
        "If it was not you, ignore this email: you will receive nothing more.\n"
    )
    name, link = html.escape(channel.name), html.escape(url, quote=True)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        '<meta name="supported-color-schemes" content="light dark">'
        f"<title>Confirm your subscription to {name}</title></head>"
        '<body style="margin:0;padding:0;">'
        '<div style="width:100%;max-width:600px;margin:0 auto;padding:16px;box-sizing:border-box;'
        'font-family:Arial,Helvetica,sans-serif;font-size:16px;line-height:1.5;">'
        f"<p>Hello,</p><p>Someone — hopefully you — asked to receive {name} at this address.</p>"
        f'<p><a href="{link}" style="display:inline-block;padding:10px 16px;background:#1d4ed8;'
        'color:#ffffff;text-decoration:none;border-radius:4px;">Confirm my subscription</a></p>'
        f'<p style="word-break:break-all;">Or open this link: {link}</p>'
        "<p>If it was not you, ignore this email: you will receive nothing more.</p>"
        "</div></body></html>\n"
    )
    return text, page


def confirmation_bytes(channel: Channel, address: str, url: str, date: datetime) -> bytes:
    """The confirmation email through the one builder (``rules.mail``): a notice, not list
    mail (``Auto-Submitted: auto-generated``, no List-Unsubscribe). ``HeaderError`` if a
    header value holds a control character."""
    sender = channel.sender or f"{channel.name} <no-reply@localhost>"
    head = mail.head(
        kind="confirmation",
        channel_id=channel.id,
        sender=sender,
        subject=f"Please confirm your subscription to {channel.name}",
    )
    text, page = confirmation_texts(channel, url)
    return mail.assemble(
        head,
        to=("", address),  # never a display name: the requester's text
        date=date,
        msg_id=mail.message_id(sender, "confirm"),
        text=text,
        html=page,
    )


def confirmation_email(channel: Channel, address: str, url: str, date: datetime) -> EmailMessage:
    """``confirmation_bytes`` parsed back (tests)."""
    return email.message_from_bytes(
        confirmation_bytes(channel, address, url, date), policy=email.policy.default
    )


class LinksServer:
    def __init__(
        self,
        services: Services,
        mail: ConfirmationMail,
        listener: tuple[socket.socket, str] | None = None,
    ) -> None:
        self.services = services
        self.mail = mail
        self._stop = trio.Event()
        self._send, self._receive = trio.open_memory_channel[tuple[Channel, str, str]](QUEUE_SIZE)
        self._last_sent: OrderedDict[tuple[int, str], float] = OrderedDict()
        self._per_client = ChangeLimiter(services.config["links.signup_per_hour"])
        self.app = LinksApp(services, self.queue_confirmation)
        self._sock: socket.socket | None = listener[0] if listener else None
        self.url = listener[1] if listener else ""

    def stop(self) -> None:
        self._stop.set()

    def return_path(self, channel_id: int, sender: str) -> str:
        """MAIL FROM of a confirmation: ``c-<token>@<bounces domain>`` when ``[bounces]
        domain`` is set, else the sender's address."""
        domain = str(self.services.config["bounces.domain"]).strip().lower()
        if not domain:
            return sender
        try:
            keys = keys_from_secret(self.services.config.credential("link_signing_key"))
            return f"{VerpSigner(keys).confirm(channel_id)}@{domain}"
        except (OSError, ValueError):  # no key: the signup was refused before (503)
            return sender

    def queue_confirmation(self, channel: Channel, address: str, token: str, client: str) -> None:
        key = (channel.id, cooldown_key(address))
        now = trio.current_time()
        cooldown = self.services.config["links.confirm_resend_minutes"] * 60.0
        last = self._last_sent.get(key)
        if last is not None and now - last < cooldown:
            log.info("signup confirmation not resent yet", channel_id=channel.id)
            return
        if not self._per_client.take(client, now):
            log.info(
                "signup confirmation not sent: too many from one client",
                channel_id=channel.id,
                client=client,
            )
            return
        url = f"{self.mail.public_url()}/c/{token}"
        try:
            self._send.send_nowait((channel, address, url))
        except trio.WouldBlock:
            self._per_client.give_back(client, now)
            log.warning("signup confirmation queue full; one dropped", channel_id=channel.id)
            return
        self._last_sent[key] = now
        self._last_sent.move_to_end(key)
        while len(self._last_sent) > COOLDOWN_KEYS:
            self._last_sent.popitem(last=False)

    async def _mailer(self) -> None:
        async for channel, address, url in self._receive:
            try:
                bounced = await self.services.store.run(
                    bounce_store.address_bounced, channel.id, address
                )
            except StoreUnavailable:  # cannot tell: a signup is not lost for it
                bounced = False
            if bounced:
                log.info(
                    "signup confirmation not sent",
                    channel_id=channel.id,
                    problem="the address bounced",
                )
                continue
            try:
                data = confirmation_bytes(channel, address, url, self.services.clock.now())
            except HeaderError as exc:
                log.warning("signup confirmation not sent", channel_id=channel.id, problem=str(exc))
                continue
            sender = parseaddr(channel.sender or "no-reply@localhost")[1]
            try:
                dkim = config_mod.dkim_key(self.services.config)
            except (DkimKeyError, OSError) as exc:
                log.warning(
                    "signup confirmation not sent",
                    channel_id=channel.id,
                    problem=f"the DKIM key does not load: {exc}",
                )
                continue
            if dkim is not None and not aligned(mail.sender_domain(sender), dkim.domain):
                log.warning(
                    "signup confirmation not sent",
                    channel_id=channel.id,
                    problem=misaligned(sender, dkim.domain),
                )
                continue
            transport = self.mail.transport()
            return_path = self.return_path(channel.id, sender)

            def send_one(
                transport=transport, data=data, address=address, sender=return_path, dkim=dkim
            ) -> str:
                if dkim is not None:
                    data = dkim.sign(data)
                transport.open()
                try:
                    return transport.send(data, sender, address).outcome.value
                finally:
                    transport.close()

            try:
                outcome = await trio.to_thread.run_sync(send_one)
            except Exception as exc:  # noqa: BLE001 - a transport failure must not end the service
                log.warning(
                    "signup confirmation not sent",
                    channel_id=channel.id,
                    problem=type(exc).__name__,
                )
            else:
                log.info("signup confirmation sent", channel_id=channel.id, outcome=outcome)

    def hypercorn_config(self) -> EdgeConfig:
        config = self.services.config
        hc = EdgeConfig()
        if self.app.settings.hsts:  # no includeSubDomains: other hosts of the domain are not ours
            hc.extra_headers = ((b"strict-transport-security", HSTS.encode()),)
        hc.accesslog = None  # our access line names the route, never the token
        hc.errorlog = logging.getLogger("hypercorn.error")
        hc.h11_max_incomplete_size = config["links.max_header_bytes"]
        hc.include_server_header = False
        hc.keep_alive_timeout = 5
        hc.read_timeout = 10
        hc.graceful_timeout = float(config["daemon.shutdown_grace_seconds"])
        return hc

    def open(self) -> str:
        """Bind the listener, when it was not handed over."""
        config = self.services.config
        self._sock, self.url = open_listener(
            config["links.listen"], config["links.max_connections"]
        )
        return self.url

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        if self._sock is None:
            self.open()
        assert self._sock is not None
        config = self.services.config
        listener = CappedListener(
            self._sock, config["links.max_connections"], config["links.request_seconds"]
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._mailer)
            await nursery.start(self._serve_http, listener, nursery.cancel_scope)
            log.info("links service listening", url=self.url)
            task_status.started(self.url)
        log.info("links service stopped")

    async def _serve_http(
        self,
        listener: CappedListener,
        done: trio.CancelScope,
        *,
        task_status=trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            # Returns after stop(), once the requests in flight are answered (graceful_timeout).
            await serve(
                self.app, self.hypercorn_config(), listener, self._stop, task_status=task_status
            )
        finally:
            done.cancel()  # the mailer's queue ends with the service
