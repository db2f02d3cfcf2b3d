"""Delivery tests talk to real things: aiosmtpd on loopback, a SQLite file, the manual clock."""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from plugins.ports import free_port, smtp_controller
from plugins.stores import seed_sqlite

from kuloo_daemon import config as config_mod
from kuloo_daemon.delivery.service import Delivery
from kuloo_daemon.services import open_services
from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.store import users as user_store
from kuloo_daemon.vocabulary import Actor

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "config" / "articles"
PAGES = ROOT / "config" / "clip-pages"
START = "2026-01-05T09:00:00Z"
SIGNING_KEY = "test-signing-key-0123456789abcdef"


@dataclass
class Sink:
    """What the SMTP server accepted, and how it misbehaves on purpose."""

    messages: list[email.message.EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)  # the bytes as received (DKIM checks)
    refuse: set[str] = field(default_factory=set)  # recipients answered 550
    tempfail: set[str] = field(default_factory=set)  # recipients answered 451 (try again later)
    drop_at_rcpt: set[str] = field(
        default_factory=set
    )  # recipients whose RCPT closes the connection (once each)
    on_data: object = None  # called with the message before the 250 (e.g. to kill the daemon)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        if address in self.tempfail:
            return "451 4.3.0 try again later"
        if address in self.drop_at_rcpt:
            self.drop_at_rcpt.discard(address)
            server.transport.close()
            return "421 closing"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(msg)
            self.raw.append(envelope.original_content or envelope.content)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        if self.on_data is not None:
            self.on_data(msg)
        return "250 OK queued"

    def to(self, address: str) -> list[email.message.EmailMessage]:
        return [
            m
            for m, (_f, rcpts) in zip(self.messages, self.envelopes, strict=True)
            if address in rcpts
        ]

    def subjects(self, address: str) -> list[str]:
        return [str(m["Subject"]) for m in self.to(address)]


@pytest.fixture
def smtp_sink():
    sink = Sink()
    # No SMTPUTF8 (aiosmtpd's Controller offers it unless told): the relay most tests assume;
    # test_smtputf8.py has one that offers it.
    controller, sink.port = smtp_controller(sink, enable_SMTPUTF8=False)
    yield sink
    controller.stop()


class PageHandler(SimpleHTTPRequestHandler):
    hits: list[str]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=str(PAGES), **kwargs)

    def do_GET(self):  # noqa: N802
        self.server.hits.append(self.path)
        if self.path == "/slow.html":
            import time

            time.sleep(3)
        if self.path == "/huge.html":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html><body>" + b"<p>x</p>" * 400_000 + b"</body></html>")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def pages():
    """A local web server for clipping (and for proving a stylesheet is never fetched)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), PageHandler)  # binds its own port
    server.hits = []
    server.daemon_threads = True  # shutting down does not wait for the slow page
    server.handle_error = lambda *_: None  # a client that gave up (timeout, size limit) is expected
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def copy_samples(root: Path, page_port: int | None) -> Path:
    target = root / "articles" / "sample"
    shutil.copytree(SAMPLES, target)
    clip = target / "newsletter" / "2026-01-12-compost.md"
    if page_port is not None:
        clip.write_text(clip.read_text().replace("127.0.0.1:8767", f"127.0.0.1:{page_port}"))
    return target


def write_config(root: Path, smtp_port: int, **extra: dict) -> config_mod.Config:
    creds = root / "creds"
    creds.mkdir(exist_ok=True)
    (creds / "link-signing-key").write_text(SIGNING_KEY + "\n")
    data = {
        "daemon": {"state_dir": str(root / "state"), "scheduler_tick_seconds": 0.2},
        "control": {"socket": str(root / "c.sock")},
        "clock": {"mode": "manual", "start": START},
        "credentials": {"directory": str(creds)},
        "articles": {
            "root": str(root / "articles"),
            "allow_private_urls": True,
            "clip_timeout_seconds": 1,
        },
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none", "timeout_seconds": 5},
        "delivery": {"messages_per_second": 10_000, "retry_seconds": 60},
        "links": {"public_url": "https://links.kuloo.test"},
    }
    for section, body in extra.items():
        data[section] = {**data.get(section, {}), **body}
    return config_mod.from_mapping(data)


class Env:
    """An in-process daemon core (services, no scheduler loop): the test drives the clock."""

    def __init__(self, services, delivery):
        self.services = services
        self.store = services.store
        self.clock = services.clock
        self.delivery = delivery

    async def channel(
        self,
        name="Kuloo Gardens",
        sender="Kuloo Gardens <news@gardens.test>",
        postal="Kuloo Gardens Ltd\n1 Allotment Road\nLeeds LS1 1AA",
    ) -> int:
        created = await self.store.run(
            channel_store.create,
            {
                "name": name,
                "sender": sender,
                "postal_address": postal,
                "sequential_tags": ["welcome", "onboarding"],
            },
            None,
            self.clock.now(),
        )
        return created.channel.id

    async def user(
        self,
        channel: int,
        email_: str,
        *,
        tags=(),
        frequency="weekly",
        first_name="",
        unsubscribed=False,
    ) -> int:
        """A user added as an admin would (users.add's use case)."""
        fields = {
            "email": email_,
            "first_name": first_name,
            "promo_tags": list(tags),
            "frequency": frequency,
            "unsubscribed": unsubscribed,
        }
        doc = await self.store.run(user_store.add, channel, fields, Actor.ADMIN, self.clock.now())
        return doc.id

    async def update_user(self, user_id: int, **changes) -> None:
        await self.store.run(user_store.update, user_id, changes, Actor.ADMIN, self.clock.now())

    async def outbox(self, channel: int, state=None):
        from kuloo_daemon.store import delivery as s

        return await self.store.run(s.list_outbox, channel, state, 1000, None)

    async def advance(self, seconds: float):
        await self.clock.advance(seconds)
        return await self.delivery.run(None)


@pytest.fixture
def delivery_backend():
    """The store the delivery tests run on: SQLite, unless a module overrides this fixture
    with the root ``backend`` (both stores), as test_acceptance.py does."""
    return None


@pytest.fixture
def env_factory(short_tmp, smtp_sink, delivery_backend, sqlite_template):
    @asynccontextmanager
    async def make(sub: str = "", page_port: int | None = None, **extra):
        root = Path(short_tmp) / sub if sub else Path(short_tmp)
        root.mkdir(parents=True, exist_ok=True)
        (root / "articles").mkdir(exist_ok=True)
        if not (root / "articles" / "sample").exists():
            copy_samples(root, page_port)
        if delivery_backend is not None and delivery_backend.postgres:
            extra.setdefault("store", delivery_backend.store_section())
        config = write_config(root, smtp_sink.port, **extra)
        if config.store_url is None:
            seed_sqlite(sqlite_template, config.database_path)
        async with open_services(config) as services:
            yield Env(services, Delivery(services))

    return make


def parse_all(sink: Sink):
    return sink.messages


__all__ = ["Sink", "free_port", "os"]
