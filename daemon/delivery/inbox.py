"""The two bounce mailboxes the daemon reads (docs/delivery.md, "Bounces and complaints"):
a local Maildir (``MaildirInbox``, stdlib ``mailbox.Maildir``) and an IMAP mailbox over
TLS (``ImapInbox``, stdlib ``imaplib``). Both are blocking: ``delivery.bounces`` calls
them from a worker thread (``trio.to_thread``), one call at a time.

One interface, the steps of the process-once loop:
- ``open()`` (raises ``InboxError`` with a reason that names no secret) and ``close()``;
- ``keys()``: every message waiting, oldest first (names only: nothing is read);
- ``read(key, max_bytes)``: the message's bytes, or None when it is bigger than
  ``max_bytes`` (such a message is never read whole) or gone (another reader took it);
- ``remove(key)``: called only after the message's effects are committed;
- ``set_aside(key)``: to the unknown folder (Maildir ``.unknown``, IMAP mailbox
  ``unknown``), never deleted.
"""

from __future__ import annotations

import contextlib
import functools
import imaplib
import mailbox
import os
import re
import ssl
from collections.abc import Callable

from ..config import ImapUrl
from ..secrets import Secret

UNKNOWN = "unknown"  # the Maildir++ sub-folder ".unknown", or the IMAP mailbox "unknown"
CHUNK = 1 << 16


class InboxError(Exception):
    """The mailbox cannot be read now (missing, refused, TLS): retried at the next poll."""


class MaildirInbox:
    """A Maildir the local MTA delivers the bounce domain's mail to (new/ and cur/)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._box: mailbox.Maildir | None = None
        self._unknown: mailbox.Maildir | None = None

    def open(self) -> None:
        try:
            self._box = mailbox.Maildir(self.path, factory=None, create=False)
            for sub in ("new", "cur", "tmp"):
                if not os.path.isdir(os.path.join(self.path, sub)):
                    raise InboxError(f"{self.path} is not a Maildir (no {sub}/ in it)")
        except mailbox.NoSuchMailboxError:
            raise InboxError(f"no Maildir at {self.path}") from None
        except OSError as exc:
            raise InboxError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        self._box = self._unknown = None

    @property
    def box(self) -> mailbox.Maildir:
        if self._box is None:
            raise InboxError("the Maildir is not open")
        return self._box

    def keys(self) -> list[str]:
        try:
            return sorted(self.box.keys())  # unique names start with the delivery time
        except OSError as exc:
            raise InboxError(f"cannot list {self.path}: {exc.strerror or exc}") from None

    def read(self, key: str, max_bytes: int) -> bytes | None:
        try:
            with contextlib.closing(self.box.get_file(key)) as f:
                f.seek(0, os.SEEK_END)
                if f.tell() > max_bytes:
                    return None
                f.seek(0)
                return f.read()
        except (KeyError, FileNotFoundError):  # removed meanwhile (another reader)
            return None
        except OSError as exc:  # unreadable (permissions): the poll stops, said why
            raise InboxError(f"cannot read a message in {self.path}: {exc.strerror}") from None

    def size(self, key: str) -> int | None:
        try:
            with contextlib.closing(self.box.get_file(key)) as f:
                f.seek(0, os.SEEK_END)
                return f.tell()
        except (KeyError, FileNotFoundError):
            return None

    def remove(self, key: str) -> None:
        with contextlib.suppress(KeyError, FileNotFoundError):
            self.box.remove(key)

    def unknown_folder(self) -> mailbox.Maildir:
        if self._unknown is None:
            try:
                self._unknown = self.box.get_folder(UNKNOWN)
            except mailbox.NoSuchMailboxError:
                self._unknown = self.box.add_folder(UNKNOWN)
        return self._unknown

    def set_aside(self, key: str) -> None:
        """Move the message, byte for byte, into ``.unknown`` (a rename: atomic, never read)."""
        self.unknown_folder()  # created when missing
        try:
            # mailbox.Maildir has no public "where is it": _lookup is its own key -> "new/…"
            subpath = self.box._lookup(key)  # type: ignore[attr-defined]
        except KeyError:
            return  # gone meanwhile
        try:
            os.rename(
                os.path.join(self.path, subpath), os.path.join(self.path, "." + UNKNOWN, subpath)
            )
        except FileNotFoundError:
            return


def _uid_of(header: bytes) -> str | None:
    found = re.search(rb"\bUID (\d+)", header)
    return found[1].decode() if found else None


def default_context(ca_file: str = "") -> ssl.SSLContext:
    """TLS that verifies the server's certificate and name: against ``ca_file`` (``[bounces]
    ca_file``) when given, else the system's trust store."""
    return ssl.create_default_context(cafile=ca_file or None)


class ImapInbox:
    """``[bounces] imap_url``: ``imaps://USER@HOST[:PORT]/MAILBOX`` with the
    ``bounces-password`` credential; TLS only, the certificate verified."""

    BATCH = 200  # UIDs per size query

    def __init__(
        self,
        url: ImapUrl,
        password: Callable[[], Secret],
        *,
        timeout: float = 60.0,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.password = password
        self.timeout = timeout
        self.context = context
        self._imap: imaplib.IMAP4_SSL | None = None
        self._sizes: dict[str, int] = {}
        self._caps: set[str] = set()

    @property
    def where(self) -> str:
        return f"imaps://{self.url.user}@{self.url.host}:{self.url.port}/{self.url.mailbox}"

    def open(self) -> None:
        try:
            secret = self.password()
        except (OSError, ValueError) as exc:
            raise InboxError(f"the bounces-password credential: {type(exc).__name__}") from None
        try:
            imap = imaplib.IMAP4_SSL(
                self.url.host,
                self.url.port,
                ssl_context=self.context or default_context(),
                timeout=self.timeout,
            )
        except ssl.SSLError as exc:
            raise InboxError(f"TLS with {self.url.host} failed: {exc.reason or exc}") from None
        except (OSError, imaplib.IMAP4.error) as exc:
            raise InboxError(f"cannot connect to {self.url.host}:{self.url.port}: {exc}") from None
        try:
            imap.login(self.url.user, secret.reveal())
        except imaplib.IMAP4.error:
            with contextlib.suppress(Exception):
                imap.logout()
            raise InboxError(f"{self.url.host} refused the login of {self.url.user}") from None
        except (OSError, ssl.SSLError) as exc:
            raise InboxError(f"{self.url.host} dropped the connection: {exc}") from None
        self._imap = imap
        try:
            # what the server offers after the login (MOVE, UIDPLUS) may differ from before
            typ, data = imap.capability()
            if typ == "OK" and data and isinstance(data[0], bytes):
                self._caps = set(data[0].decode("ascii", "replace").upper().split())
            else:
                self._caps = {c.upper() for c in imap.capabilities}
            typ, _ = imap.select(_quote(self.url.mailbox))
            if typ != "OK":
                raise InboxError(f"no mailbox {self.url.mailbox!r} on {self.url.host}")
            # the unknown mailbox: created once (an error says it exists already)
            with contextlib.suppress(imaplib.IMAP4.error):
                imap.create(UNKNOWN)
        except (OSError, imaplib.IMAP4.error) as exc:
            self.close()
            raise InboxError(f"cannot open {self.url.mailbox!r}: {exc}") from None

    def close(self) -> None:
        imap, self._imap = self._imap, None
        if imap is not None:
            with contextlib.suppress(Exception):
                imap.logout()
        self._sizes.clear()

    @property
    def imap(self) -> imaplib.IMAP4_SSL:
        if self._imap is None:
            raise InboxError("the IMAP mailbox is not open")
        return self._imap

    def _check(self, typ: str, data: object, what: str) -> None:
        if typ != "OK":
            raise InboxError(f"{what} refused: {data!r}"[:300])

    def _wrap(self, what: str, call: Callable[[], tuple[str, list]]) -> tuple[str, list]:
        try:
            return call()
        except (OSError, imaplib.IMAP4.abort) as exc:  # SSLError, timeouts: OSErrors
            self.close()
            raise InboxError(f"{what}: the connection dropped ({exc})") from None
        except imaplib.IMAP4.error as exc:  # a BAD answer
            raise InboxError(f"{what} refused: {exc}"[:300]) from None

    def keys(self) -> list[str]:
        typ, data = self._wrap("UID SEARCH", lambda: self.imap.uid("SEARCH", "ALL"))
        self._check(typ, data, "UID SEARCH")
        uids = sorted({int(u) for line in data if line for u in line.split()})
        keys = [str(u) for u in uids]
        self._sizes.clear()
        for start in range(0, len(keys), self.BATCH):
            part = ",".join(keys[start : start + self.BATCH])
            typ, data = self._wrap("UID FETCH", functools.partial(self._sizes_of, part))
            self._check(typ, data, "UID FETCH")
            for item in data:
                header = item[0] if isinstance(item, tuple) else item
                if not isinstance(header, bytes):
                    continue
                uid, size = _uid_of(header), re.search(rb"RFC822\.SIZE (\d+)", header)
                if uid is not None and size is not None:
                    self._sizes[uid] = int(size[1])
        return keys

    def _sizes_of(self, uids: str) -> tuple[str, list]:
        return self.imap.uid("FETCH", uids, "(RFC822.SIZE)")

    def read(self, key: str, max_bytes: int) -> bytes | None:
        size = self._sizes.get(key)
        if size is not None and size > max_bytes:
            return None
        typ, data = self._wrap("UID FETCH", lambda: self.imap.uid("FETCH", key, "(BODY.PEEK[])"))
        self._check(typ, data, "UID FETCH")
        for i, item in enumerate(data):
            if not isinstance(item, tuple) or b"BODY[]" not in item[0]:
                continue  # an unsolicited FETCH (flags of another message)
            # the UID comes before the literal or after it: "1 (BODY[] {n}" … " UID 7)"
            after = data[i + 1] if i + 1 < len(data) else b""
            uid = _uid_of(item[0]) or (_uid_of(after) if isinstance(after, bytes) else None)
            if uid == key:
                body = item[1]
                self._sizes[key] = len(body)  # a server that did not say its size
                return body if len(body) <= max_bytes else None
        return None  # expunged meanwhile

    def size(self, key: str) -> int | None:
        return self._sizes.get(key)

    def _expunge(self, key: str) -> None:
        if "UIDPLUS" in self._caps:
            typ, data = self._wrap("UID EXPUNGE", lambda: self.imap.uid("EXPUNGE", key))
        else:
            typ, data = self._wrap("EXPUNGE", lambda: self.imap.expunge())
        self._check(typ, data, "EXPUNGE")

    def remove(self, key: str) -> None:
        typ, data = self._wrap(
            "UID STORE", lambda: self.imap.uid("STORE", key, "+FLAGS.SILENT", r"(\Deleted)")
        )
        self._check(typ, data, "UID STORE")
        self._expunge(key)

    def set_aside(self, key: str) -> None:
        if "MOVE" in self._caps:
            typ, data = self._wrap("UID MOVE", lambda: self.imap.uid("MOVE", key, UNKNOWN))
            self._check(typ, data, "UID MOVE")
            return
        typ, data = self._wrap("UID COPY", lambda: self.imap.uid("COPY", key, UNKNOWN))
        self._check(typ, data, "UID COPY")
        self.remove(key)


def _quote(mailbox_name: str) -> str:
    """A mailbox name as an IMAP quoted string (imaplib sends arguments as they are)."""
    return '"' + mailbox_name.replace("\\", "\\\\").replace('"', '\\"') + '"'
