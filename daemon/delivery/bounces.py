"""The bounce mailbox, read every ``[bounces] poll_seconds`` (docs/delivery.md, "Bounces and
complaints"); a job only when ``[bounces] domain`` is set.

Each message, oldest first: its bytes are read (a worker thread; at most ``READ_BUDGET``
bytes of messages held at once, whatever the mailbox holds), classified
(``rules.bounces.classify``), and the read batch's effects committed with each message's
SHA-256 in one transaction (``store.bounces.take_many``: one store crossing per batch, not
per message) — THEN each is removed, or, when nobody could read it (``unknown``),
moved to the unknown folder, never deleted. A crash between the commit and the removal
reads it again at the next poll: the digest is known, so it has no second effect and is
only removed. A message bigger than ``rules.bounces.MAX_MESSAGE_BYTES`` goes to the unknown
folder unread.

After each poll: one ``users.changed`` per channel whose users changed, every message
counted (``Metrics.bounce_heard``: its kind, or ``duplicate``), one log line of counts
(never an address), and ``status``' ``bounces`` document. A mailbox that cannot be read
(missing, login refused, TLS) is logged with the reason and tried again at the next poll.
"""

from __future__ import annotations

import hashlib
import logging
import math
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import structlog
import trio

from ..config import parse_imap_url
from ..rules.bounces import MAX_MESSAGE_BYTES, Bounce, Kind, VerpSigner, classify
from ..scheduler import Job
from ..services import Services
from ..store import bounces as bounce_store
from ..store import users as user_store
from ..store.health import StoreUnavailable
from ..tokens import keys_from_secret
from .inbox import ImapInbox, InboxError, MaildirInbox, default_context

log = structlog.get_logger("kuloo.delivery")

READ_BUDGET = 16 * 1024 * 1024  # bytes of messages read ahead at once (plus one message)
READ_COUNT = 100  # messages read ahead at once
# Kinds that act on a user: without a genuine token they name no one and go to unknown.
UNATTRIBUTED = frozenset({Kind.HARD, Kind.SOFT, Kind.MESSAGE, Kind.COMPLAINT})

# flufl.bounce logs each of its detectors' failures on malformed mail with a traceback, as an
# error; such a message is ours to judge (``unknown``, counted and kept), not an error.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)


class Inbox(Protocol):
    def open(self) -> None: ...
    def close(self) -> None: ...
    def keys(self) -> list[str]: ...
    def read(self, key: str, max_bytes: int) -> bytes | None: ...
    def size(self, key: str) -> int | None: ...
    def remove(self, key: str) -> None: ...
    def set_aside(self, key: str) -> None: ...


@dataclass(frozen=True)
class Read:
    """One message as read in the worker thread: its key, digest and classification
    (None: too big, or gone)."""

    key: str
    digest: str = ""
    bounce: Bounce | None = None
    too_big: bool = False


@dataclass
class Poll:
    """What a poll did: ``status`` shows the last one."""

    at: datetime | None = None
    ok: bool = True
    error: str = ""
    counts: Counter[str] = field(default_factory=Counter)
    changed: int = 0  # users bounced or unsubscribed
    left: int = 0  # messages left for the next poll (a failure stopped this one)

    def view(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat() if self.at is not None else None,
            "ok": self.ok,
            "error": self.error or None,
            "messages": dict(sorted(self.counts.items())),
            "users_changed": self.changed,
        }


def _file_away(inbox: Inbox, moves: list[tuple[str, bool]]) -> list[str]:
    """In the worker thread: remove each message, or set it aside (``True``); the reasons
    of those that could not be (they are read again, as duplicates, at the next poll)."""
    failed = []
    for key, kept in moves:
        try:
            (inbox.set_aside if kept else inbox.remove)(key)
        except OSError as exc:
            failed.append(exc.strerror or type(exc).__name__)
    return failed


def _read_batch(inbox: Inbox, keys: list[str], signer: VerpSigner) -> list[Read]:
    """Read and classify ``keys`` (in a worker thread), stopping at the byte budget."""
    out: list[Read] = []
    held = 0
    for key in keys:
        raw = inbox.read(key, MAX_MESSAGE_BYTES)
        if raw is None:
            size = inbox.size(key)
            out.append(Read(key, too_big=size is not None and size > MAX_MESSAGE_BYTES))
            continue
        out.append(Read(key, hashlib.sha256(raw).hexdigest(), classify(raw, signer)))
        held += len(raw)
        if held >= READ_BUDGET:
            break
    return out


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """A blocking mailbox call in a worker thread. On shutdown it is left to finish on its
    own (an IMAP server that stopped answering must not hold the drain up): it has no
    effect on the store, and a removal it may still make comes after a committed effect."""
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)


class BounceMailbox:
    """The poll job and its last result (``status``)."""

    def __init__(self, services: Services, inbox: Callable[[], Inbox] | None = None) -> None:
        self.services = services
        self.make_inbox = inbox or self._configured_inbox
        self.last: Poll | None = None
        self._next = -math.inf  # monotonic time of the next poll

    @property
    def config(self):
        return self.services.config

    @property
    def enabled(self) -> bool:
        return bool(self.config["bounces.domain"])

    def _configured_inbox(self) -> Inbox:
        if self.config["bounces.maildir"]:
            return MaildirInbox(self.config["bounces.maildir"])
        url = parse_imap_url(self.config["bounces.imap_url"])
        try:
            context = default_context(self.config["bounces.ca_file"])
        except (OSError, ssl.SSLError) as exc:  # the bundle went away or broke since start-up
            raise InboxError(f"bounces.ca_file: {getattr(exc, 'strerror', None) or exc}") from None
        return ImapInbox(url, lambda: self.config.credential("bounces_password"), context=context)

    def signer(self) -> VerpSigner:
        """Read at each poll, so a rotated link-signing key takes effect without a restart."""
        return VerpSigner(keys_from_secret(self.config.credential("link_signing_key")))

    def jobs(self) -> list[Job]:
        if not self.enabled:
            return []

        def due(now: float) -> float:
            return self._next

        async def run() -> None:
            self._next = trio.current_time() + float(self.config["bounces.poll_seconds"])
            await self.poll()

        return [Job("bounces", due, run)]

    def view(self) -> dict[str, Any] | None:
        """``status``' ``bounces``: null when ``[bounces]`` is not set."""
        if not self.enabled:
            return None
        doc: dict[str, Any] = {
            "domain": self.config["bounces.domain"],
            "mailbox": "maildir" if self.config["bounces.maildir"] else "imap",
            "poll_seconds": self.config["bounces.poll_seconds"],
        }
        doc["last_poll"] = self.last.view() if self.last is not None else None
        return doc

    async def poll(self) -> Poll:
        """Read the mailbox once, to its end; never raises for a mailbox that cannot be read
        (the next poll tries again). A store outage stops the poll (nothing removed)."""
        result = Poll(at=self.services.clock.now())
        changed: dict[int, set[int]] = {}
        try:
            try:
                signer = self.signer()
            except (OSError, ValueError) as exc:
                raise InboxError(f"the link-signing key: {type(exc).__name__}") from None
            inbox = self.make_inbox()
            await _in_thread(inbox.open)
            try:
                await self._drain(inbox, signer, result, changed)
            finally:
                await _in_thread(inbox.close)
        except InboxError as exc:
            result.ok, result.error = False, str(exc)
            before = self.last.error if self.last is not None else ""
            # once per cause, not once a minute: the status shows it meanwhile
            (log.debug if before == result.error else log.warning)(
                "bounce mailbox unreadable; trying again at the next poll", reason=str(exc)
            )
        except StoreUnavailable as exc:
            result.ok, result.error = False, "the store is unavailable"
            if not getattr(exc, "quiet", False):
                log.warning("bounce mailbox poll stopped: the store is unavailable")
        except Exception:  # a defect: the scheduler logs it with its traceback
            result.ok, result.error = False, "the poll failed (see the daemon's log)"
            raise
        finally:
            if result.ok and self.last is not None and not self.last.ok:
                log.info("bounce mailbox readable again")
            self.last = result
            self._publish(changed)
        if result.counts:
            log.info(
                "bounce mailbox read",
                users_changed=result.changed,
                **{k: v for k, v in sorted(result.counts.items())},
            )
        return result

    async def _drain(
        self,
        inbox: Inbox,
        signer: VerpSigner,
        result: Poll,
        changed: dict[int, set[int]],
    ) -> None:
        keys = await _in_thread(inbox.keys)
        soft_limit = self.config["bounces.soft_limit"]
        soft_days = self.config["bounces.soft_days"]
        start = 0
        while start < len(keys):
            batch = await _in_thread(_read_batch, inbox, keys[start : start + READ_COUNT], signer)
            start += len(batch)
            result.left = len(keys) - start
            readable = []
            for item in batch:
                if item.bounce is not None:
                    readable.append(item)
                elif item.too_big:  # never read whole: kept for a human
                    await _in_thread(inbox.set_aside, item.key)
                    self._count(result, Kind.UNKNOWN.value)
                    log.warning("bounce message too big to read: moved to unknown")
                # else gone meanwhile: another reader took it
            # the batch's effects and digests: one transaction, committed before any removal
            takens = await self.services.store.run(
                bounce_store.take_many,
                [(item.bounce, item.digest) for item in readable],
                self.services.clock.now(),
                soft_limit=soft_limit,
                soft_days=soft_days,
            )
            moves: list[tuple[str, bool]] = []
            for item, taken in zip(readable, takens, strict=True):
                # A report naming no one by a genuine token had no effect (store.bounces):
                # kept for a human beside the unreadable ones.
                kept = item.bounce.kind is Kind.UNKNOWN or (
                    item.bounce.token is None and item.bounce.kind in UNATTRIBUTED
                )
                # counted when its effects are committed, before the removal: a failed
                # removal reads it again as a duplicate, which is counted as one
                kind = Kind.UNKNOWN.value if kept else taken.kind.value
                self._count(result, "duplicate" if taken.duplicate else kind)
                await self._note_changed(taken, changed, result)
                moves.append((item.key, kept))
            for why in await _in_thread(_file_away, inbox, moves):
                # its effects are committed: a duplicate next time
                result.ok, result.error = False, f"cannot remove a message: {why}"
                log.warning(
                    "bounce message not removed; it is read again at the next poll", reason=why
                )

    def _count(self, result: Poll, kind: str) -> None:
        result.counts[kind] += 1
        self.services.metrics.bounce_heard(kind)

    async def _note_changed(
        self, taken: bounce_store.Taken, changed: dict[int, set[int]], result: Poll
    ) -> None:
        if not taken.user_ids:
            return
        result.changed += len(taken.user_ids)
        if len(taken.channel_ids) == 1:
            changed.setdefault(taken.channel_ids[0], set()).update(taken.user_ids)
            return
        for user_id in taken.user_ids:  # a bounce named by address: users of several channels
            doc = await self.services.store.run(user_store.get, user_id)
            changed.setdefault(doc.channel_id, set()).add(user_id)

    def _publish(self, changed: dict[int, set[int]]) -> None:
        for channel_id, ids in sorted(changed.items()):
            self.services.publish("users.changed", {"channel": channel_id, "ids": sorted(ids)})
