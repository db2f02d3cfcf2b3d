"""A real IMAP server on loopback for the bounce mailbox's tests: pymap (a maintained
IMAP4rev1 server, its in-memory "dict" backend) behind implicit TLS (imaps) with a
certificate from trustme, in a thread of its own running asyncio.

pymap offers only STARTTLS on its own; the tests need imaps (the daemon speaks nothing
else), so the listening socket is opened here with ``asyncio.start_server(ssl=...)`` and
pymap's connection handler serves it. pymap's server speaks MOVE and UIDPLUS; ``no_move``
hides MOVE (the COPY + \\Deleted + EXPUNGE path)."""

from __future__ import annotations

import asyncio
import imaplib
import ssl
import threading
from argparse import Namespace
from collections.abc import Iterator
from dataclasses import dataclass

import trustme


@dataclass
class ImapServer:
    host: str
    port: int
    user: str
    password: str
    ca: trustme.CA

    def client_context(self) -> ssl.SSLContext:
        """What the daemon's ``ssl.create_default_context()`` is, trusting the test CA."""
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx

    def client(self) -> imaplib.IMAP4_SSL:
        imap = imaplib.IMAP4_SSL(self.host, self.port, ssl_context=self.client_context())
        imap.login(self.user, self.password)
        return imap

    def append(self, raw: bytes, mailbox: str = "INBOX") -> None:
        imap = self.client()
        try:
            typ, data = imap.append(mailbox, None, None, raw)
            assert typ == "OK", data
        finally:
            imap.logout()

    def messages(self, mailbox: str = "INBOX") -> list[bytes]:
        """The bytes of every message in ``mailbox`` not marked deleted, in UID order."""
        imap = self.client()
        try:
            typ, _ = imap.select(mailbox, readonly=True)
            if typ != "OK":
                return []
            typ, data = imap.uid("SEARCH", "UNDELETED")
            uids = sorted(int(u) for line in data if line for u in line.split())
            out = []
            for uid in uids:
                typ, data = imap.uid("FETCH", str(uid), "(BODY.PEEK[])")
                out.extend(item[1] for item in data if isinstance(item, tuple))
            return out
        finally:
            imap.logout()


def _args(user: str, password: str) -> Namespace:
    return Namespace(
        host="127.0.0.1",
        port=0,
        debug=False,
        cert=None,
        key=None,
        tls=False,  # no STARTTLS: the socket itself is TLS
        passlib_cfg=None,
        proxy_protocol=None,
        inherited_sockets=None,
        demo_data=False,
        demo_user=user,
        demo_password=password,
    )


def run_imap_server(
    cert_host: str = "127.0.0.1", *, no_move: bool = False, user: str = "bounces"
) -> Iterator[ImapServer]:
    """Start the server; yields it; stops it. ``cert_host``: the name its certificate is for."""
    from proxyprotocol.reader import ProxyProtocolReader
    from pymap.backend.dict import DictBackend
    from pymap.imap import IMAPServer

    password = "imap-test-password-0123"
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(cert_host).configure_cert(server_ctx)
    started = threading.Event()
    holder: dict = {}

    async def main() -> None:
        backend, config = await DictBackend.init(
            _args(user, password), invalid_user_sleep=0.0, reject_dnsbl=False
        )
        config.apply_context()
        if no_move:
            base = type(config)

            class NoMove(base):  # type: ignore[misc, valid-type]
                @property
                def login_capability(self):
                    return [c for c in super().login_capability if c != b"MOVE"]

            config.__class__ = NoMove
        imap_server = IMAPServer(backend.login, config)
        callback = ProxyProtocolReader(config.proxy_protocol).get_callback(imap_server)
        server = await asyncio.start_server(callback, "127.0.0.1", 0, ssl=server_ctx)
        holder["port"] = server.sockets[0].getsockname()[1]
        holder["loop"] = asyncio.get_running_loop()
        holder["stop"] = stop = asyncio.Event()
        started.set()
        async with server:
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    if not started.wait(30):
        raise RuntimeError("the test IMAP server did not start")
    try:
        yield ImapServer("127.0.0.1", holder["port"], user, password, ca)
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(10)
