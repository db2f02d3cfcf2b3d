"""Links tests: the real app served by hypercorn's trio worker on loopback, a real SQLite file,
the manual clock, confirmation emails in a real Maildir; httpx as the client."""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
import shutil
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from kuloo_daemon import config as config_mod
from kuloo_daemon.delivery.service import Delivery
from kuloo_daemon.links.server import LinksServer, open_listener
from kuloo_daemon.services import open_services
from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.store import users as user_store
from kuloo_daemon.tokens import Claim, Purpose, Signer
from kuloo_daemon.vocabulary import Actor

START = "2026-01-05T09:00:00Z"
OLD_KEY = "old-links-signing-key-0123456789"
KEY = "links-signing-key-abcdef0123456789"


def write_config(root: Path, keys: tuple[str, ...] = (KEY,), **extra: dict) -> config_mod.Config:
    creds = root / "creds"
    creds.mkdir(exist_ok=True)
    (creds / "link-signing-key").write_text("\n".join(keys) + "\n")
    data: dict[str, dict[str, Any]] = {
        "daemon": {"state_dir": str(root / "state"), "shutdown_grace_seconds": 2},
        "control": {"socket": str(root / "c.sock")},
        "clock": {"mode": "manual", "start": START},
        "credentials": {"directory": str(creds)},
        "delivery": {"transport": "maildir", "maildir": str(root / "mail")},
        "links": {
            "listen": "127.0.0.1:0",
            "rate_per_minute": 100_000,
            "rate_burst": 100_000,
            "allowed_origins": ["https://www.gardens.test"],
            "confirm_resend_minutes": 0,
        },
    }
    for section, body in extra.items():
        data[section] = {**data.get(section, {}), **body}
    return config_mod.from_mapping(data)


def parse_mail(f) -> email.message.EmailMessage:
    return email.message_from_binary_file(f, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class Links:
    """One running links service and what a test needs around it."""

    services: Any
    server: LinksServer
    http: httpx.AsyncClient
    root: Path
    events: list[tuple[str, Any]] = field(default_factory=list)
    signer: Signer = field(default_factory=lambda: Signer([KEY.encode()]))

    @property
    def url(self) -> str:
        return self.server.url

    async def channel(self, name: str = "Kuloo Gardens") -> int:
        created = await self.services.store.run(
            channel_store.create,
            {
                "name": name,
                "sender": f"{name} <news@gardens.test>",
                "postal_address": "1 Allotment Road",
            },
            None,
            self.services.clock.now(),
        )
        return created.channel.id

    async def user(self, channel: int, email: str = "ada@example.com", **fields) -> user_store.User:
        return await self.services.store.run(
            user_store.add,
            channel,
            {"email": email, **fields},
            Actor.ADMIN,
            self.services.clock.now(),
        )

    async def get(self, user_id: int) -> user_store.User:
        return await self.services.store.run(user_store.get, user_id)

    async def audit(self, user_id: int) -> list:
        return await self.services.store.run(user_store.audit, user_id, 500)

    def token(
        self, user: user_store.User, purpose: Purpose = Purpose.UNSUBSCRIBE, target: str = ""
    ) -> str:
        return self.signer.sign(Claim(purpose, user.channel_id, user.kuloo_id, target))

    def mails(self) -> list:
        box = self.root / "mail"
        if not all((box / sub).is_dir() for sub in ("new", "cur", "tmp")):
            return []  # the transport may be creating the Maildir right now
        try:
            return list(mailbox.Maildir(str(box), create=False, factory=parse_mail))
        except FileNotFoundError:  # a message moved between listing and reading
            return []

    async def wait_for_mail(self, n: int) -> None:
        """Confirmations leave from a queue in a worker thread: wait until ``n`` are in the Maildir."""
        with trio.fail_after(10):
            while len(self.mails()) < n:  # noqa: ASYNC110 - a Maildir written by another thread has no event
                await trio.sleep(0.02)
        await trio.sleep(0.05)  # and no more than n arrive
        assert len(self.mails()) == n, [m["To"] for m in self.mails()]

    def confirm_links(self) -> list[str]:
        out = []
        for msg in self.mails():
            text = msg.get_body(("plain",)).get_content()
            out += re.findall(r"http://127\.0\.0\.1:\d+/c/[A-Za-z0-9_.-]+", text)
        return out


@pytest.fixture(scope="session")
def migrated_db(sqlite_template):
    """One migrated SQLite file, copied into each test's state (tests/plugins/stores.py)."""
    return sqlite_template


@asynccontextmanager
async def running(root: Path, template: Path | None = None, **extra):
    events: list[tuple[str, Any]] = []
    config = write_config(root, **extra)
    if template is not None:
        config.database_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, config.database_path)
    async with open_services(config, lambda e, d: events.append((e, d))) as services:
        # As app.run_daemon does: bind first (delivery's fallback public URL), then links,
        # whose confirmations use delivery's transport.
        listener = open_listener(
            services.config["links.listen"], services.config["links.max_connections"]
        )
        server = LinksServer(services, Delivery(services, listener[1]), listener)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            async with httpx.AsyncClient(
                base_url=server.url, timeout=10, follow_redirects=False
            ) as http:
                yield Links(services, server, http, root, events)
            server.stop()


@pytest.fixture
def links_env(short_tmp, migrated_db):
    """``async with links_env(**config_sections) as links:`` — a fresh service per use."""
    count = iter(range(1000))

    def make(**extra):
        root = Path(short_tmp) / f"l{next(count)}"
        root.mkdir()
        return running(root, migrated_db, **extra)

    return make
