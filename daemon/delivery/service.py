"""Delivery's I/O shell: import articles, plan, render, send, record — around pure decisions.

``Delivery`` is built once per daemon run from ``Services``. Its parts:

- ``import_articles``: read a folder under ``[articles] root`` (in a worker thread),
  parse each file (``documents``), clip pages (``clip``), then one store crossing.
- ``run``: one pass per channel — ``plan`` (``schedule.decide`` inside one store
  transaction), then batches: ``claim`` (marked ``sending`` and committed *before* the
  transport sees them), send over one connection (more if one cannot keep the channel's
  pace: ``_send_lanes``), ``record`` the batch's outcomes
  together. A crash between the two commits leaves ``sending`` rows that start-up turns
  into ``uncertain`` (``store.delivery.mark_interrupted``): never re-sent on its own.
- ``jobs``: a business-time job, due at the earliest planned time (next sequence email,
  digest, publication, retry; on the wall clock also every 5 minutes), and a monotonic
  one that plans the channels an event changed (users, articles, the channel) once the
  burst is over: ``CHANGES_QUIET`` without a new one, or ``CHANGES_MAX_WAIT`` after the
  first. A change during a pass marks its channel again, so it gets another pass.

A pass reads only the users due (``store.delivery.plan``: ``next_due_at`` null or past),
so its cost follows what is due, not the channel's size.

Rendering is cached per (article versions, template, channel look); per recipient only
``message.build`` runs. CPU-heavy work (Markdown, premailer, readability) and blocking
SMTP/Maildir run in worker threads.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import structlog
import trio

from .. import config as config_mod
from ..clock import MANUAL
from ..rules.bounces import Bounce, Kind, VerpKind, VerpSigner, VerpToken, classify_reply
from ..rules.headers import HeaderError
from ..rules.mail import envelope_address
from ..rules.signing import DkimKey, DkimKeyError, aligned, misaligned
from ..scheduler import ClockJob, Job
from ..services import LeaseLost, Services
from ..store import backup
from ..store import bounces as bounce_store
from ..store import delivery as store
from ..store.health import StoreUnavailable
from ..tokens import Signer, keys_from_secret
from . import documents, schedule
from .clip import ClipError, clip
from .message import (
    MAX_HTML_BYTES,
    Envelope,
    Recipient,
    build,
    build_bytes,
    frame,
    largest_html_bytes,
    sender_domain,
    too_big,
)
from .render import Piece, Rendered, render_email, template_version
from .transport import (
    NO_SMTPUTF8,
    MaildirTransport,
    Outcome,
    SmtpSettings,
    SmtpTransport,
    TransportError,
)

log = structlog.get_logger("kuloo.delivery")

OUTCOMES = {Outcome.SENT: "sent", Outcome.NOT_SENT: "not_sent", Outcome.MAYBE_SENT: "maybe_sent"}
SEND_CHUNK = 20  # messages per trip to the sending thread
# SMTP connections a batch may use at once: a second (third) opens only while those open
# cannot keep the channel's pace, e.g. a relay far away (round trips, docs/delivery.md).
MAX_CONNECTIONS = 3
RECHECK = timedelta(
    seconds=300
)  # wall clock: business time between passes even when nothing is planned
CACHE_SIZE = 256
MAX_FILES = 10_000
CHANGES_QUIET = 0.1  # seconds without a new change before the changed channels are planned
CHANGES_MAX_WAIT = 1.0  # ... but never later than this after the first change of a burst
EVERY = None  # in the dirty set: every channel


class ImportError_(ValueError):  # noqa: N801 - not the builtin
    """The import cannot start (bad path): the caller gets one clear error."""


@dataclass
class PassCounts:
    queued: int = 0
    sent: int = 0
    failed: int = 0
    uncertain: int = 0


RELAY_MAX_BACKOFF = timedelta(hours=1)


@dataclass
class Relay:
    """The mail relay as the last session found it: ``status`` and the dashboard show it.

    ``refusing``: the relay refused the session (connect, TLS, login, MAIL FROM, 421, "relay
    access denied"); no message is held against it — all stay queued — and no session is
    tried before ``retry_at`` (business time), backing off from ``delivery.retry_seconds``
    up to an hour.
    """

    state: str = "unknown"  # unknown | ok | refusing
    error: str = ""
    since: datetime | None = None
    retry_at: datetime | None = None
    refusals: int = 0

    def refused(self, error: str, now: datetime, first_seconds: float) -> None:
        if self.state != "refusing":
            log.warning("mail relay refusing: every message stays queued", error=error)
            self.since = now
        self.state, self.error = "refusing", error
        self.refusals += 1
        wait = timedelta(seconds=first_seconds * 2 ** min(self.refusals - 1, 20))
        self.retry_at = now + min(wait, RELAY_MAX_BACKOFF)

    def accepted(self, now: datetime) -> None:
        if self.state == "refusing":
            log.info(
                "mail relay accepting again",
                refused_since=self.since.isoformat() if self.since else None,
            )
        if self.state != "ok":
            self.since = now
        self.state, self.error, self.retry_at, self.refusals = "ok", "", None, 0

    def waiting(self, now: datetime) -> bool:
        """Still backing off: no session is tried yet."""
        return self.state == "refusing" and self.retry_at is not None and now < self.retry_at

    def view(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "error": self.error or None,
            "since": self.since.isoformat() if self.since else None,
            "retry_at": self.retry_at.isoformat() if self.retry_at else None,
        }


@dataclass
class Delivery:
    services: Services
    links_url: str = ""  # the links service's bound address: links when public_url is empty
    next_due: datetime | None = None
    last_pass: datetime | None = None
    relay: Relay = field(default_factory=Relay)
    mailbox: Any = None  # the bounce mailbox (delivery.bounces.BounceMailbox): status shows it
    # Channels changed since their last pass (``EVERY``: all of them), and when the burst
    # of changes began and last grew (trio time), for the ``delivery-changes`` job.
    _dirty: set[int | None] = field(default_factory=lambda: {EVERY})
    _burst: tuple[float, float] | None = None
    _cache: OrderedDict = field(default_factory=OrderedDict)
    _signer: Signer | None = None
    _verp: VerpSigner | None = None
    _pace: dict[int, float] = field(
        default_factory=dict
    )  # channel -> time.monotonic() of its next send
    # Held while a connection waits for its turn: turns are handed out one at a time.
    _gate: threading.Lock = field(default_factory=threading.Lock)
    _lock: trio.Lock = field(default_factory=trio.Lock)
    cache_hits: int = 0
    cache_misses: int = 0

    # Events after which the next pass should come at once rather than at the next recheck:
    # a user added or changed (tags, frequency, opt-out), articles or a channel changed.
    WATCHED = ("user.", "users.", "articles.", "channel.")

    def __post_init__(self) -> None:
        inner = self.services.publish

        def publish(event: str, data: Any) -> None:
            if event.startswith(self.WATCHED):
                # Which channel: a rendered document (a dict) or a store document (links).
                if isinstance(data, dict):
                    channel = (
                        data.get("id") if event.startswith("channel.") else data.get("channel")
                    )
                else:
                    channel = getattr(data, "channel_id", None)
                self.mark_changed(
                    channel if isinstance(channel, int) and not isinstance(channel, bool) else EVERY
                )
            inner(event, data)

        self.services.publish = publish

    @property
    def pass_lock(self) -> trio.Lock:
        """Held by every delivery pass: whoever holds it knows no mail is being planned or sent."""
        return self._lock

    @property
    def paused(self) -> str | None:
        """Why sending is paused (a restore left it so: ``store.backup``), or None."""
        return backup.delivery_paused(self.config.state_dir)

    def resume(self) -> bool:
        """Sending resumes (``delivery.resume``); False if it was not paused."""
        resumed = backup.resume_delivery(self.config.state_dir)
        if resumed:
            log.info("delivery resumed")
            self.mark_changed(EVERY)
        return resumed

    @property
    def dirty(self) -> bool:
        """Something changed that a pass has not planned yet."""
        return bool(self._dirty)

    @dirty.setter
    def dirty(self, value: bool) -> None:
        if value:
            self.mark_changed(EVERY)
        else:
            self._dirty.clear()
            self._burst = None

    def mark_changed(self, channel_id: int | None = EVERY) -> None:
        """A change that may make mail due in ``channel_id`` (``EVERY``: in any channel)."""
        self._dirty.add(channel_id)
        try:
            now = trio.current_time()
        except RuntimeError:  # outside trio (a test's setup): plan at the next look
            now = -math.inf
        self._burst = (self._burst[0] if self._burst else now, now)

    def _take_changed(self, channel_id: int | None) -> None:
        """A pass over ``channel_id`` (None: every channel) is starting: it plans their changes."""
        if channel_id is None:
            self._dirty.clear()
        else:
            self._dirty.discard(channel_id)
        if not self._dirty:
            self._burst = None

    # ------------------------------------------------------------------ configuration

    @property
    def config(self):
        return self.services.config

    def signer(self) -> Signer:
        if self._signer is None:
            self._signer = Signer.from_secret(self.config.credential("link_signing_key"))
        return self._signer

    def verp(self) -> VerpSigner:
        """Signs the VERP return paths and mailto: addresses (the link-signing keys)."""
        if self._verp is None:
            self._verp = VerpSigner(keys_from_secret(self.config.credential("link_signing_key")))
        return self._verp

    def bounce_domain(self) -> str:
        return str(self.config["bounces.domain"]).strip().lower()

    def return_path(self, sender: str, kuloo_id: str, outbox_id: int) -> str:
        """MAIL FROM of one list message: ``b-<token>@<bounces domain>`` (VERP, so a bounce
        names its message), or the sender's address when ``[bounces] domain`` is empty (or
        the KulooId is no token: not 32 hex digits)."""
        domain = self.bounce_domain()
        if not domain:
            return sender
        try:
            return f"{self.verp().bounce(kuloo_id, outbox_id)}@{domain}"
        except ValueError:
            return sender

    def public_url(self) -> str:
        return (self.config["links.public_url"] or self.links_url or "http://localhost").rstrip("/")

    def envelope(self, channel: store.ChannelInfo) -> Envelope:
        # With [bounces], each user's own u- address replaces list_unsubscribe_mailto
        # (ignored, with a warning at start-up and in check-config: config.warnings).
        domain = self.bounce_domain()
        return Envelope(
            channel.id,
            channel.name,
            channel.sender,
            self.public_url(),
            "" if domain else self.config["delivery.list_unsubscribe_mailto"],
            domain,
        )

    def transport(self) -> MaildirTransport | SmtpTransport:
        if self.config["delivery.transport"] == "maildir":
            return MaildirTransport(self.config.maildir_path)
        password = None
        if self.config["smtp.username"]:
            password = self.config.credential("smtp_password")
        return SmtpTransport(
            SmtpSettings(
                self.config["smtp.host"],
                self.config["smtp.port"],
                self.config["smtp.security"],
                self.config["smtp.username"],
                password,
                self.config["smtp.timeout_seconds"],
                self.config["smtp.ca_file"],
                self.config["smtp.helo_name"],
            )
        )

    # ------------------------------------------------------------------ articles

    def resolve_folder(self, path: str) -> Path:
        root = self.config.articles_root.resolve()
        if not isinstance(path, str) or not path.strip():
            raise ImportError_("'path' must be a folder under [articles] root")
        folder = (root / path).resolve()
        if not folder.is_relative_to(root):
            raise ImportError_(f"'path' must be under [articles] root ({root})")
        if not folder.is_dir():
            raise ImportError_(f"{folder} is not a folder")
        return folder

    async def import_articles(
        self, channel_id: int, path: str, *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Import the folder ``path`` (under ``[articles] root``) into the channel.

        Keys and files are relative to the root, and only articles whose file lay under
        ``path`` are withdrawn (docs/delivery.md, "Articles"). ``dry_run``: what would be
        new, changed and withdrawn, without clipping and without writing anything.
        """
        folder = self.resolve_folder(path)
        root = self.config.articles_root.resolve()
        folder_rel = folder.relative_to(root).as_posix()
        files = await trio.to_thread.run_sync(_read_folder, folder, root)
        problems: list[dict[str, str]] = []
        docs: dict[str, documents.Document] = {}
        clips: list[documents.Document] = []
        for rel, text in files:
            if isinstance(text, OutsideRoot):
                problems.append({"file": rel, "problem": str(text)})
                continue
            if isinstance(text, Exception):
                problems.append({"file": rel, "problem": f"cannot read it: {text}"})
                continue
            parsed = documents.parse(rel, text)
            if isinstance(parsed, str):
                problems.append({"file": rel, "problem": parsed})
            elif parsed.key in docs:
                problems.append(
                    {
                        "file": rel,
                        "problem": f"id {parsed.key!r} is also used by "
                        f"{docs[parsed.key].source_file}",
                    }
                )
            else:
                docs[parsed.key] = parsed
                if parsed.format == "clip":
                    clips.append(parsed)
        if dry_run:  # no clipping: a clip's article stays as it is, neither changed nor withdrawn
            for doc in clips:
                docs.pop(doc.key, None)
            defaulted = [d.key for d in docs.values() if d.key == d.source_file]
            inputs = [_input(d) for d in docs.values()]
            counts = await self.services.store.run(
                store.import_articles,
                channel_id,
                inputs,
                self.services.clock.now(),
                [d.key for d in clips],
                folder=folder_rel,
                defaulted=defaulted,
                dry_run=True,
            )
            return {**_report(counts, problems), "dry_run": True, "clips": len(clips)}

        async def clip_one(doc: documents.Document, limit: trio.CapacityLimiter) -> None:
            async with limit:
                try:
                    got = await clip(
                        doc.url,
                        timeout_seconds=self.config["articles.clip_timeout_seconds"],
                        max_bytes=self.config["articles.clip_max_bytes"],
                        allow_private=self.config["articles.allow_private_urls"],
                    )
                except ClipError as exc:
                    problems.append({"file": doc.source_file, "problem": str(exc)})
                    docs.pop(doc.key, None)
                    return
                docs[doc.key] = doc.with_body(got.html, title=got.title)

        oversized: list[str] = []
        limit = trio.CapacityLimiter(4)
        async with trio.open_nursery() as nursery:
            for doc in clips:
                nursery.start_soon(clip_one, doc, limit)
        # Too big for Gmail's clip limit (with the real links, a 200-character greeting and
        # the longest tokens): an import problem; a stored version stays as it was.
        channel = await self.services.store.run(store.channel_info, channel_id)
        for doc in list(docs.values()):
            size = await self._largest_size(
                [
                    store.ArticleBody(
                        0, 0, doc.title or doc.url, doc.format, doc.body, doc.url, doc.summary
                    )
                ],
                channel,
            )
            if size > MAX_HTML_BYTES:
                problems.append(
                    {"file": doc.source_file, "problem": f"not imported: {too_big(size)}"}
                )
                docs.pop(doc.key)
                oversized.append(doc.key)
        # A clip that failed keeps its last good version rather than being withdrawn.
        failed_clips = {p["file"] for p in problems}
        keep = [d.key for d in clips if d.source_file in failed_clips] + oversized
        inputs = [_input(d) for d in docs.values()]
        defaulted = [d.key for d in docs.values() if d.key == d.source_file]
        counts = await self.services.store.run(
            store.import_articles,
            channel_id,
            inputs,
            self.services.clock.now(),
            keep,
            folder=folder_rel,
            defaulted=defaulted,
        )
        self.mark_changed(channel_id)  # plan again at once: new articles may be due
        log.info(
            "articles imported",
            channel_id=channel_id,
            folder=str(folder),
            imported=counts.imported,
            updated=counts.updated,
            unchanged=counts.unchanged,
            withdrawn=counts.withdrawn,
            problems=len(problems),
        )
        return _report(counts, problems)

    # ------------------------------------------------------------------ rendering

    async def rendered(
        self, bodies: list[store.ArticleBody], channel: store.ChannelInfo, full: int | None = None
    ) -> Rendered:
        key = (
            tuple((b.id, b.version) for b in bodies),
            template_version(),
            channel.name,
            channel.postal_address,
            full,
        )
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.cache_hits += 1
            return hit
        self.cache_misses += 1
        pieces = [
            Piece(b.id, b.version, b.title, b.format, b.body, b.url, b.summary) for b in bodies
        ]
        result = await trio.to_thread.run_sync(
            lambda: render_email(
                pieces, channel=channel.name, postal_address=channel.postal_address, full=full
            )
        )
        self._cache[key] = result
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return result

    async def _fitted(
        self, parts: list[store.ArticleBody], channel: store.ChannelInfo, envelope: Envelope
    ) -> Rendered | str:
        """The email within the size limit: a digest carries its first articles in full and the
        rest as titles until it fits; a single article that grew too big is refused (why)."""
        full = len(parts)
        while True:
            rendered = await self.rendered(parts, channel, None if full == len(parts) else full)
            size = await trio.to_thread.run_sync(
                largest_html_bytes, rendered, envelope, self.signer()
            )
            if size <= MAX_HTML_BYTES:
                return rendered
            if full == 1:
                return f"not sent: {too_big(size)}"
            full -= 1

    async def _largest_size(
        self, bodies: list[store.ArticleBody], channel: store.ChannelInfo, full: int | None = None
    ) -> int:
        pieces = [
            Piece(b.id, b.version, b.title, b.format, b.body, b.url, b.summary) for b in bodies
        ]
        envelope, signer = self.envelope(channel), self.signer()
        return await trio.to_thread.run_sync(
            lambda: largest_html_bytes(
                render_email(
                    pieces, channel=channel.name, postal_address=channel.postal_address, full=full
                ),
                envelope,
                signer,
            )
        )

    async def preview(self, article_id: int, user_id: int | None) -> dict[str, Any]:
        inputs = await self.services.store.run(store.preview_inputs, article_id, user_id)
        rendered = await self.rendered([inputs.article], inputs.channel)
        r = inputs.recipient
        recipient = (
            Recipient(r.kuloo_id, r.email, r.first_name, r.last_name)
            if r is not None
            else Recipient("preview", "subscriber@example.com", "Subscriber")
        )
        msg = build(
            rendered,
            self.envelope(inputs.channel),
            recipient,
            self.signer(),
            msg_id=f"<preview.{article_id}@{sender_domain(inputs.channel.sender)}>",
            date=self.services.clock.now(),
            verp=self.verp() if self.bounce_domain() else None,
        )
        # ``build`` always makes both parts.
        html_part = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
        text_part = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        warnings = list(rendered.warnings)
        if not inputs.channel.sender:
            warnings.append("the channel has no sender address: emails cannot be sent")
        if not inputs.channel.postal_address:
            warnings.append("the channel has no postal address for the footer")
        return {
            "subject": rendered.subject,
            "preheader": rendered.preheader,
            "html": html_part,
            "text": text_part,
            "headers": {
                k: str(v)
                for k, v in msg.items()
                if k.lower() not in ("content-type", "mime-version")
            },
            "size_bytes": len(html_part.encode()),
            "warnings": warnings,
        }

    # ------------------------------------------------------------------ planning and sending

    def jobs(self) -> list[ClockJob | Job]:
        """Two jobs, because two reasons to run a pass.

        ``delivery`` (business time): when the earliest planned email, digest, publication
        or retry falls due — what ``clock.advance`` waits for. ``delivery-changes``
        (monotonic, within a tick): after an event that changed users, articles or channels.
        """

        def due(now: datetime) -> datetime | None:
            if self.last_pass is None:
                return now
            times = [t for t in (self.next_due, self.relay.retry_at) if t is not None]
            if self.services.clock.mode != MANUAL:
                # On the wall clock, also a regular look in case a change came without an
                # event; the manual clock (tests, demo) runs exactly what is due.
                times.append(self.last_pass + RECHECK)
            return min(times, default=None)

        def changed(now: float) -> float:
            if not self._dirty or self._burst is None:
                return now if self._dirty else math.inf
            first, last = self._burst
            return min(last + CHANGES_QUIET, first + CHANGES_MAX_WAIT)

        return [
            ClockJob("delivery", due, self._scheduled),
            Job("delivery-changes", changed, self._changes),
        ]

    async def _scheduled(self) -> None:
        await self.run(None)

    async def _changes(self) -> None:
        """Plan the channels changed since their last pass (all of them if one was unnamed)."""
        if EVERY in self._dirty:
            await self.run(None)
        else:
            await self.run(None, only={c for c in self._dirty if c is not None})

    async def run(self, channel_id: int | None, *, only: set[int] | None = None) -> PassCounts:
        """One pass now: plan and send what is due, per channel (``only``: just these)."""
        async with self._lock:
            started = trio.current_time()
            now = self.services.clock.now()
            if only is not None:
                for cid in only:
                    self._take_changed(cid)
                ids = sorted(set(only) & set(await self.services.store.run(store.channel_ids)))
            else:
                self._take_changed(channel_id)
                ids = (
                    [channel_id]
                    if channel_id is not None
                    else await self.services.store.run(store.channel_ids)
                )
            total = PassCounts()
            next_due: list[datetime] = []
            for cid in ids:
                # PostgreSQL: one daemon at a time plans and sends a channel (services.Leases).
                async with self.services.leases.hold("delivery", cid) as held:
                    retrying = 0
                    # Fencing: each SMTP transaction first checks that the lease is certainly
                    # still ours (``Leases.fence``); a refusal ends the channel's pass.
                    fence = self.services.leases.fence("delivery", cid)
                    # Up to three rounds: a sent email can make the next one due at once (delay 0).
                    for _ in range(3) if held else ():
                        queued, due = await self._plan(cid)
                        total.queued += queued
                        sent_before = total.sent
                        retrying += await self._send_channel(cid, total, fence)
                        if due is not None:
                            next_due.append(due)
                        if queued == 0 or total.sent == sent_before:
                            break
                    if retrying:
                        # The back-off this pass just set was not known when the channel was
                        # planned: without it a pass that sent nothing would schedule no retry.
                        retry = await self.services.store.run(store.next_retry, cid, now)
                        if retry is not None:
                            next_due.append(retry)
            if channel_id is None and only is None:
                self.last_pass = now
                self.next_due = min(next_due, default=None)
            elif next_due:
                self.next_due = min([*next_due, *([self.next_due] if self.next_due else [])])
            if total.queued or total.sent or total.failed or total.uncertain:
                log.info(
                    "delivery pass",
                    channel_id=channel_id,
                    queued=total.queued,
                    sent=total.sent,
                    failed=total.failed,
                    uncertain=total.uncertain,
                )
            self.services.metrics.delivery_pass.observe(trio.current_time() - started)
            return total

    async def _plan(self, channel_id: int) -> tuple[int, datetime | None]:
        """Plan a whole channel, a page of users per unit of work; (queued, next due)."""
        now = self.services.clock.now()
        after: int | None
        queued, dues, after = 0, [], 0
        while after is not None:
            # ``decide`` takes the store's ArticleMeta as its ArticleInfo (it converts them).
            q, due, after = await self.services.store.run(
                store.plan,
                channel_id,
                now,
                schedule.decide,  # type: ignore[arg-type]
                sender_domain,
                after,
            )
            queued += q
            if due is not None:
                dues.append(due)
        return queued, min(dues, default=None)

    async def _send_channel(
        self, channel_id: int, total: PassCounts, fence: Callable[[], None] = lambda: None
    ) -> int:
        """Send what is claimable; returns how many messages went back to wait for a retry."""
        batch_size = self.config["delivery.batch_size"]
        retrying = 0
        while True:
            if self.relay.waiting(self.services.clock.now()):
                return retrying  # the relay refused us: nothing is claimed before its back-off ends
            if self.paused is not None:
                return retrying  # after a restore, until the admin resumes (store.backup)
            claimed = await self.services.store.run(
                store.claim, channel_id, self.services.clock.now(), batch_size
            )
            if not claimed:
                return retrying
            lost: list[LeaseLost] = []
            refused: list[Bounce] = []
            results = await self._send_batch(channel_id, claimed, fence, lost, refused)
            try:
                # What the transport did is recorded even when the pass is being cancelled (a
                # stop, a lease lost while this daemon was frozen): else it stays ``sending``
                # and becomes ``uncertain`` though the daemon knew what became of it.
                with trio.CancelScope(shield=True):
                    recorded = await self.services.store.run(
                        store.record,
                        results,
                        self.services.clock.now(),
                        self.config["delivery.max_attempts"],
                        self.config["delivery.retry_seconds"],
                    )
            except StoreUnavailable:
                self._record_when_back(channel_id, results)
                if refused:
                    self._refusals_when_back(channel_id, refused, self.services.clock.now())
                raise
            self.services.metrics.emails_recorded(
                channel_id, recorded.sent, recorded.failed, recorded.uncertain
            )
            if refused:
                await self._refused(channel_id, refused)
            total.sent += recorded.sent
            total.failed += recorded.failed
            total.uncertain += recorded.uncertain
            retrying += recorded.retrying
            if lost:
                raise lost[0]  # what was sent is recorded; the rest is not ours to send
            if recorded.sent == 0:
                # nothing went through: leave the rest for the next pass (retry back-off)
                return retrying

    async def _send_batch(
        self,
        channel_id: int,
        claimed: list[store.Claimed],
        fence: Callable[[], None] = lambda: None,
        lost: list[LeaseLost] | None = None,
        refused: list[Bounce] | None = None,
    ) -> list[store.SendResult]:
        """Send the claimed messages; a fence refusal stops before the next message and is
        appended to ``lost`` (the messages not sent go back as ``unsent``). The relay's 5xx
        refusals of single messages (RCPT, DATA) go to ``refused`` as ``Bounce``s carrying
        the message's ``b-`` token (built from the outbox row, with or without ``[bounces]``)."""
        lost = [] if lost is None else lost
        ids = sorted({a for c in claimed for a in c.articles})
        bodies = await self.services.store.run(store.article_bodies, ids)
        verp = self.verp() if self.bounce_domain() else None
        transport = self.transport()
        results: list[store.SendResult] = []
        try:
            dkim = config_mod.dkim_key(self.config)
        except (DkimKeyError, OSError) as exc:
            # Unsigned mail would fail DMARC: nothing leaves, nothing is held against the mail.
            self.relay.refused(
                f"the DKIM key does not load: {exc}",
                self.services.clock.now(),
                self.config["delivery.retry_seconds"],
            )
            return [store.SendResult(c.id, "unsent") for c in claimed]
        try:
            await trio.to_thread.run_sync(transport.open)
        except TransportError as exc:
            # The relay's problem, not the messages': all stay queued, no attempt counted.
            self.relay.refused(
                str(exc), self.services.clock.now(), self.config["delivery.retry_seconds"]
            )
            return [store.SendResult(c.id, "unsent") for c in claimed]
        interval = 1.0 / self.config["delivery.messages_per_second"]
        frames: dict = {}
        fits: dict[tuple, Rendered | str] = {}
        outgoing: list[
            tuple[int, bytes, str, str]
        ] = []  # (outbox id, message, envelope sender, recipient)
        for item in claimed:
            parts = [bodies[a] for a in item.articles if a in bodies]
            sender = parseaddr(item.channel.sender)[1]
            if not parts or not sender:
                why = "its articles are gone" if not parts else "the channel has no sender address"
                results.append(store.SendResult(item.id, "not_sent", why, permanent=True))
                continue
            if dkim is not None and not aligned(sender_domain(item.channel.sender), dkim.domain):
                why = misaligned(item.channel.sender, dkim.domain)
                results.append(store.SendResult(item.id, "not_sent", why, permanent=True))
                continue
            envelope = self.envelope(item.channel)
            fit_key = (tuple(item.articles), envelope)
            if fit_key not in fits:
                fits[fit_key] = await self._fitted(parts, item.channel, envelope)
            rendered = fits[fit_key]
            if isinstance(rendered, str):
                results.append(store.SendResult(item.id, "not_sent", rendered, permanent=True))
                continue
            frame_key = (id(rendered), envelope, item.kind)
            r = item.recipient
            try:
                if frame_key not in frames:
                    frames[frame_key] = frame(rendered, envelope, item.kind)
                data = build_bytes(
                    rendered,
                    envelope,
                    Recipient(r.kuloo_id, r.email, r.first_name, r.last_name),
                    self.signer(),
                    msg_id=item.message_id,
                    date=self.services.clock.now(),
                    frame_=frames[frame_key],
                    kind=item.kind,
                    verp=verp,
                )
            except HeaderError as exc:
                # A header value with CR, LF or another control character: never sent.
                log.warning(
                    "message refused", channel_id=channel_id, outbox_id=item.id, reason=str(exc)
                )
                results.append(store.SendResult(item.id, "not_sent", str(exc), permanent=True))
                continue
            except UnicodeEncodeError:
                # A non-ASCII local part (sami.garcía@…) needs SMTPUTF8: sent with it when
                # this connection's relay offers it (UTF-8 headers), else failed for good.
                try:
                    if not transport.utf8() or frame_key not in frames:  # a sender: never UTF-8
                        raise
                    data = build_bytes(
                        rendered,
                        envelope,
                        Recipient(r.kuloo_id, r.email, r.first_name, r.last_name),
                        self.signer(),
                        msg_id=item.message_id,
                        date=self.services.clock.now(),
                        frame_=frames[frame_key],
                        kind=item.kind,
                        utf8=True,
                        verp=verp,
                    )
                except UnicodeEncodeError:
                    results.append(
                        store.SendResult(item.id, "not_sent", NO_SMTPUTF8, permanent=True)
                    )
                    continue
            return_path = self.return_path(sender, r.kuloo_id, item.id)
            outgoing.append((item.id, data, return_path, envelope_address(r.email)))
        try:
            # A 5xx refusal of one message (RCPT or DATA) lands in ``replies`` as it comes:
            # recorded with the batch's outcomes, even when the pass is cancelled.
            replies: list[tuple[int, Any]] = []
            try:
                refusal = await self._send_lanes(
                    transport, outgoing, results, channel_id, interval, dkim, fence, lost, replies
                )
            finally:
                if refused is not None:
                    refused.extend(_refusals(replies, claimed))
            now = self.services.clock.now()
            if refusal is not None:
                self.relay.refused(refusal, now, self.config["delivery.retry_seconds"])
            elif any(r.outcome == "sent" for r in results) or not outgoing:
                self.relay.accepted(now)
        except BaseException:
            # Cancelled between chunks (shutdown): record what was handed over below.
            with trio.CancelScope(shield=True):
                outcomes = self._with_unsent(results, claimed)
                try:
                    await self.services.store.run(
                        store.record,
                        outcomes,
                        self.services.clock.now(),
                        self.config["delivery.max_attempts"],
                        self.config["delivery.retry_seconds"],
                    )
                except StoreUnavailable:  # kept for when it answers again, refusals too
                    self._record_when_back(channel_id, outcomes)
                    if refused:
                        self._refusals_when_back(channel_id, refused, self.services.clock.now())
                else:
                    if refused:
                        with contextlib.suppress(StoreUnavailable):  # kept by _refused
                            await self._refused(channel_id, refused)
            raise
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(transport.close)
        return self._with_unsent(results, claimed)

    async def _refused(self, channel_id: int, refused: list[Bounce]) -> None:
        """The relay's own 5xx refusals of one batch (at RCPT or after DATA), recorded once
        its outcomes are: a hard one makes the user bounced and cancels their queued mail
        (``store.bounces.refused_at_rcpt``: not when ten or more users got the same refusal,
        the relay's problem); a policy or system refusal (5.7.x, 5.3.x, 5.4.x) fails only
        that message. Recorded even when the pass is being cancelled, as ``record`` is; kept
        until the store answers again when it does not."""
        now = self.services.clock.now()
        try:
            with trio.CancelScope(shield=True):
                changed = await self.services.store.run(bounce_store.refused_at_rcpt, refused, now)
        except StoreUnavailable:
            self._refusals_when_back(channel_id, refused, now)
            raise
        if not changed:
            return
        for _ in changed:
            self.services.metrics.bounce_heard(Kind.HARD.value, inbound=False)
        log.info("users bounced: the relay refused them", channel_id=channel_id, users=len(changed))
        self.services.publish("users.changed", {"channel": channel_id, "ids": sorted(changed)})

    def _refusals_when_back(self, channel_id: int, refused: list[Bounce], now: datetime) -> None:
        log.warning(
            "relay refusals kept until the store answers again",
            channel_id=channel_id,
            refusals=len(refused),
        )
        self.services.store.health.on_recovery(
            f"record {len(refused)} relay refusals of channel {channel_id}",
            lambda: bounce_store.refused_at_rcpt(refused, now),
        )

    def _record_when_back(self, channel_id: int, results: list[store.SendResult]) -> None:
        """The store could not record what the transport did (unreachable, a full disk): it
        is recorded as soon as the store answers again — not left ``sending`` until a restart."""
        log.warning(
            "delivery outcomes kept until the store answers again",
            channel_id=channel_id,
            messages=len(results),
        )
        now, attempts, retry = (
            self.services.clock.now(),
            self.config["delivery.max_attempts"],
            self.config["delivery.retry_seconds"],
        )
        self.services.store.health.on_recovery(
            f"record {len(results)} delivery outcomes of channel {channel_id}",
            lambda: store.record(results, now, attempts, retry),
        )

    @staticmethod
    def _with_unsent(
        results: list[store.SendResult], claimed: list[store.Claimed]
    ) -> list[store.SendResult]:
        """Every claimed message not handed to the transport goes back to the queue as it was."""
        done = {x.id for x in results}
        return results + [store.SendResult(c.id, "unsent") for c in claimed if c.id not in done]

    async def _send_lanes(
        self,
        transport,
        outgoing: list[tuple[int, bytes, str, str]],
        results: list[store.SendResult],
        channel_id: int,
        interval: float,
        dkim: DkimKey | None,
        fence: Callable[[], None],
        lost: list[LeaseLost],
        replies: list[tuple[int, Any]] | None = None,
    ) -> str | None:
        """Send ``outgoing`` over ``transport`` (open) and, while the connections open cannot
        keep the channel's pace, over more SMTP connections (at most ``MAX_CONNECTIONS``).

        Every connection takes the next message from one shared queue (each message goes out
        once) and waits for the channel's next turn (``_send_chunk``): the pace is the
        channel's, whatever the number of connections. Each outcome lands in ``results`` once,
        as it comes. Returns the relay's refusal of the session, if any: then no connection
        starts another message. A further connection that cannot be opened, or that breaks
        and cannot be reopened while another still sends, is given up quietly: its message
        goes back to the queue.
        """
        todo = deque(outgoing)
        stop = threading.Event()
        grow = isinstance(transport, SmtpTransport)
        lanes = [1]  # connections open or opening
        refusal: list[str] = []
        errors: list[Exception] = []
        watching = trio.CancelScope()

        async def watch() -> None:
            """A stop (cancellation) reaches the threads: none starts another message."""
            with watching:
                try:
                    await trio.sleep_forever()
                finally:
                    stop.set()

        async def lane(conn, opened: bool, nursery: trio.Nursery) -> None:
            try:
                if not opened:
                    try:
                        await trio.to_thread.run_sync(conn.open)
                    except TransportError as exc:
                        log.info("one connection to the relay is enough", reason=str(exc))
                        return
                while todo and not stop.is_set():
                    ask = lanes[0] if grow and lanes[0] < MAX_CONNECTIONS else 0
                    out, why, end, busy = await trio.to_thread.run_sync(
                        self._send_chunk,
                        conn,
                        todo,
                        channel_id,
                        interval,
                        dkim,
                        fence,
                        lost,
                        stop,
                        ask,
                        replies,
                    )
                    results.extend(out)
                    if end == "gone" and lanes[0] > 1:
                        return  # the others carry on with its message
                    if end in ("relay", "gone"):
                        stop.set()
                        refusal.append(why or "")
                        return
                    if end == "slow":
                        # As many as that message's time needs, and no more than its followers.
                        need = min(math.ceil(busy / interval), MAX_CONNECTIONS, len(todo))
                        for _ in range(need - lanes[0]):
                            lanes[0] += 1
                            nursery.start_soon(lane, self.transport(), False, nursery)
            except Exception as exc:  # raised as it is below, not in an exception group
                stop.set()
                errors.append(exc)
            finally:
                lanes[0] -= 1
                if lanes[0] == 0:
                    watching.cancel()
                if not opened:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(conn.close)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                nursery.start_soon(lane, transport, True, nursery)
        except BaseExceptionGroup as group:
            # The lanes catch their errors: what is left is a cancellation (a stop, a lease
            # lost), raised as one task would raise it, so callers see ``trio.Cancelled``.
            raise group.exceptions[0] from None
        if errors:
            raise errors[0]
        return refusal[0] if refusal else None

    def _turn(self, channel_id: int, interval: float, stop: threading.Event) -> None:
        """Wait for the channel's next turn: turns are ``interval`` apart (or more, when none
        was waiting), whichever connection takes them (one waits at a time), so the channel's
        rate holds overall. A stop ends the wait at once (for every connection waiting)."""
        with self._gate:
            if stop.is_set():
                return
            now = time.monotonic()
            turn = max(now, self._pace.get(channel_id, now))
            self._pace[channel_id] = turn + interval  # a late wake-up does not slow the pace
            if turn > now:
                stop.wait(turn - now)

    def _send_chunk(
        self,
        transport,
        todo: deque[tuple[int, bytes, str, str]] | list[tuple[int, bytes, str, str]],
        channel_id: int,
        interval: float,
        dkim: DkimKey | None = None,
        fence: Callable[[], None] = lambda: None,
        lost: list[LeaseLost] | None = None,
        stop: threading.Event | None = None,
        lanes: int = 0,
        replies: list[tuple[int, Any]] | None = None,
    ) -> tuple[list[store.SendResult], str | None, str | None, float]:
        """In a worker thread: take messages from ``todo`` (shared by the batch's connections),
        DKIM-sign each (CPU: here, never in the event loop) and send it at the channel's next
        turn; at most ``SEND_CHUNK``, then back to trio. A stop sets ``stop``: it waits only
        for the message in flight. A connection that broke earlier is reopened once.

        Returns (results, why, end, busy); ``end`` says why the chunk ended early:

        - ``"relay"``: the relay refused the session (``why``): that message and the rest are
          left unsent, with no attempt held against them; ``stop`` is set.
        - ``"gone"``: the connection broke and cannot be reopened (``why``): its message is
          back at the head of ``todo``.
        - ``"fenced"``: the fence, checked right before each SMTP transaction (after the
          wait), refused: the refusal goes to ``lost``; ``stop`` is set.
        - ``"slow"``: signing and sending one message took ``busy`` seconds, longer than
          ``lanes`` turns (0: never asked): the connections open cannot keep the pace.

        A 5xx refusal of one message (RCPT or DATA; not the session's) goes to ``replies``
        as (outbox id, transport result).
        """
        todo = todo if isinstance(todo, deque) else deque(todo)
        stop = stop or threading.Event()
        out: list[store.SendResult] = []
        for _ in range(SEND_CHUNK):
            if stop.is_set():
                return out, None, None, 0.0
            try:
                item = todo.popleft()
            except IndexError:
                return out, None, None, 0.0
            outbox_id, data, sender, recipient = item
            if (
                getattr(transport, "conn", True) is None
            ):  # the connection broke earlier in this batch
                try:
                    transport.open()
                except TransportError as exc:
                    todo.appendleft(item)
                    return out, str(exc), "gone", 0.0
            busy = time.monotonic()
            if dkim is not None:
                data = dkim.sign(data)  # before the turn: the wait overlaps it
            signing = time.monotonic() - busy
            self._turn(channel_id, interval, stop)
            if stop.is_set():
                todo.appendleft(item)
                return out, None, None, 0.0
            try:
                fence()  # last, right before the transaction
            except LeaseLost as exc:
                stop.set()
                if lost is not None:
                    lost.append(exc)
                return out, None, "fenced", 0.0
            busy = time.monotonic() - signing
            result = transport.send(data, sender, recipient)
            if result.relay:
                stop.set()
                return out, result.detail, "relay", 0.0
            if replies is not None and result.code >= 500 and result.stage in ("rcpt", "data"):
                replies.append((outbox_id, result))
            out.append(
                store.SendResult(
                    outbox_id, OUTCOMES[result.outcome], result.detail, result.permanent
                )
            )
            busy = time.monotonic() - busy
            if lanes and todo and busy > lanes * interval:
                return out, None, "slow", busy
        return out, None, None, 0.0

    # ------------------------------------------------------------------ users

    async def progress(self, user_id: int) -> dict[str, Any]:
        state, metas, titles, sent = await self.services.store.run(store.progress_inputs, user_id)
        now = self.services.clock.now()
        anchor = schedule.sequence_anchor(state.tags, state.anchor, now)
        articles = [
            schedule.ArticleInfo(m.id, m.tags, m.published_at, m.delay_seconds, m.withdrawn)
            for m in metas
        ]
        step = schedule.next_in_sequence(articles, state.tags, state.taken, anchor, now)
        nxt = None
        if step is not None:
            nxt = {
                "article": step.article,
                "title": titles.get(step.article, ""),
                "due_at": step.due_at,
            }
        else:  # one on its way: show it as next, due now
            waiting = [a for a, t in state.taken.items() if t is None]
            if waiting:
                nxt = {"article": waiting[0], "title": titles.get(waiting[0], ""), "due_at": now}
        return {
            "sent": [{"article": s.article, "title": s.title, "sent_at": s.sent_at} for s in sent],
            "next": nxt,
        }

    async def reset_sequence(self, user_id: int) -> int:
        cleared = await self.services.store.run(
            store.reset_sequence, user_id, self.services.clock.now()
        )
        self.dirty = True
        return cleared


def _refusals(replies: list[tuple[int, Any]], claimed: list[store.Claimed]) -> list[Bounce]:
    """The relay's refusals as ``Bounce``s (``rules.bounces.classify_reply``), each with its
    message's token: the outbox row names the user, whatever the MAIL FROM was."""
    users = {c.id: c.recipient.kuloo_id for c in claimed}
    out = []
    for outbox_id, result in replies:
        bounce = classify_reply(result.code, result.reply, result.stage)
        token = VerpToken(VerpKind.BOUNCE, users[outbox_id], outbox_id=outbox_id)
        out.append(replace(bounce, token=token))
    return out


class OutsideRoot(Exception):
    """A file that resolves outside ``[articles] root`` (a symbolic link): never read."""

    def __str__(self) -> str:
        return "a symbolic link that leads outside [articles] root; it was not read"


def _input(d: documents.Document) -> store.ArticleInput:
    return store.ArticleInput(
        d.key,
        d.source_file,
        d.title or d.url,
        d.format,
        d.body,
        d.url,
        d.tags,
        d.published_at,
        d.delay_seconds,
        d.content_hash,
        d.summary,
    )


def _report(counts: store.ImportCounts, problems: list[dict[str, str]]) -> dict[str, Any]:
    """``articles.import``'s answer: the counts, each withdrawn article, each problem."""
    return {
        "imported": counts.imported,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "withdrawn": counts.withdrawn,
        "cancelled": counts.cancelled,
        "withdrawn_articles": list(counts.withdrawn_articles),
        "new": list(counts.new_keys),
        "changed": list(counts.changed_keys),
        "problems": sorted(problems, key=lambda p: p["file"]),
    }


def _read_folder(folder: Path, root: Path) -> list[tuple[str, str | Exception]]:
    out: list[tuple[str, str | Exception]] = []
    for path in sorted(folder.rglob("*")):
        # Keys and files are named relative to the root, whichever folder is imported.
        rel = path.relative_to(root).as_posix()
        if (
            any(part.startswith(".") for part in path.relative_to(folder).parts)
            or not path.is_file()
        ):
            continue
        if path.suffix.lower() not in documents.EXTENSIONS:
            continue
        if len(out) >= MAX_FILES:
            break
        # Every file is resolved: a symbolic link may point anywhere the daemon can read
        # (its link-signing key); it is read through the checked path, never the link.
        real = path.resolve()
        if not real.is_relative_to(root):
            out.append((rel, OutsideRoot()))
            continue
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
            with open(fd, encoding="utf-8") as f:
                out.append((rel, f.read()))
        except (OSError, UnicodeDecodeError) as exc:
            out.append((rel, exc))
    return out
