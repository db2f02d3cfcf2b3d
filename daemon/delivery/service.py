"""Delivery's I/O shell: import articles, plan, render, send, record — around pure decisions.

``Delivery`` is built once per daemon run from ``Services``. Its parts:

- ``import_articles``: read a folder under ``[articles] root`` (in a worker thread),
  parse each file (``documents``), clip pages (``clip``), then one store crossing.
- ``run``: one pass per channel — ``plan`` (``schedule.decide`` inside one store
  transaction), then batches: ``claim`` (marked ``sending`` and committed *before* the
  transport sees them), send over one connection, ``record`` the batch's outcomes
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

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any

import structlog
import trio

from ..clock import MANUAL
from ..scheduler import ClockJob, Job
from ..services import LeaseLost, Services
from ..store import delivery as store
from ..store.health import StoreUnavailable
from ..tokens import Signer
from . import documents, schedule
from .clip import ClipError, clip
from .message import Envelope, Recipient, build, build_bytes, frame, sender_domain
from .render import Piece, Rendered, render_email, template_version
from .transport import MaildirTransport, Outcome, SmtpSettings, SmtpTransport, TransportError

log = structlog.get_logger("kuloo.delivery")

OUTCOMES = {Outcome.SENT: "sent", Outcome.NOT_SENT: "not_sent", Outcome.MAYBE_SENT: "maybe_sent"}
SEND_CHUNK = 20  # messages per trip to the sending thread
RECHECK = timedelta(seconds=300)  # wall clock: business time between passes even when nothing is planned
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


@dataclass
class Delivery:
    services: Services
    next_due: datetime | None = None
    last_pass: datetime | None = None
    # Channels changed since their last pass (``EVERY``: all of them), and when the burst
    # of changes began and last grew (trio time), for the ``delivery-changes`` job.
    _dirty: set[int | None] = field(default_factory=lambda: {EVERY})
    _burst: tuple[float, float] | None = None
    _cache: OrderedDict = field(default_factory=OrderedDict)
    _signer: Signer | None = None
    _pace: dict[int, float] = field(default_factory=dict)  # channel -> time.monotonic() of its next send
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
                    channel = data.get("id") if event.startswith("channel.") else data.get("channel")
                else:
                    channel = getattr(data, "channel_id", None)
                self.mark_changed(channel if isinstance(channel, int) and not isinstance(channel, bool) else EVERY)
            inner(event, data)

        self.services.publish = publish

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

    def public_url(self) -> str:
        return (self.config["links.public_url"] or getattr(self.services, "links_url", None)
                or "http://localhost").rstrip("/")

    def envelope(self, channel: store.ChannelInfo) -> Envelope:
        return Envelope(channel.id, channel.name, channel.sender, self.public_url(),
                        self.config["delivery.list_unsubscribe_mailto"])

    def transport(self):
        if self.config["delivery.transport"] == "maildir":
            return MaildirTransport(self.config.maildir_path)
        password = None
        if self.config["smtp.username"]:
            password = self.config.credential("smtp_password")
        return SmtpTransport(SmtpSettings(
            self.config["smtp.host"], self.config["smtp.port"], self.config["smtp.security"],
            self.config["smtp.username"], password, self.config["smtp.timeout_seconds"]))

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

    async def import_articles(self, channel_id: int, path: str) -> dict[str, Any]:
        folder = self.resolve_folder(path)
        files = await trio.to_thread.run_sync(_read_folder, folder)
        problems: list[dict[str, str]] = []
        docs: dict[str, documents.Document] = {}
        clips: list[documents.Document] = []
        for rel, text in files:
            if isinstance(text, Exception):
                problems.append({"file": rel, "problem": f"cannot read it: {text}"})
                continue
            parsed = documents.parse(rel, text)
            if isinstance(parsed, str):
                problems.append({"file": rel, "problem": parsed})
            elif parsed.key in docs:
                problems.append({"file": rel, "problem": f"id {parsed.key!r} is also used by {docs[parsed.key].source_file}"})
            else:
                docs[parsed.key] = parsed
                if parsed.format == "clip":
                    clips.append(parsed)

        async def clip_one(doc: documents.Document, limit: trio.CapacityLimiter) -> None:
            async with limit:
                try:
                    got = await clip(doc.url, timeout_seconds=self.config["articles.clip_timeout_seconds"],
                                     max_bytes=self.config["articles.clip_max_bytes"],
                                     allow_private=self.config["articles.allow_private_urls"])
                except ClipError as exc:
                    problems.append({"file": doc.source_file, "problem": str(exc)})
                    docs.pop(doc.key, None)
                    return
                docs[doc.key] = doc.with_body(got.html, title=got.title)

        limit = trio.CapacityLimiter(4)
        async with trio.open_nursery() as nursery:
            for doc in clips:
                nursery.start_soon(clip_one, doc, limit)
        # A clip that failed keeps its last good version rather than being withdrawn.
        failed_clips = {p["file"] for p in problems}
        keep = [d.key for d in clips if d.source_file in failed_clips]
        inputs = [store.ArticleInput(d.key, d.source_file, d.title or d.url, d.format, d.body, d.url, d.tags,
                                     d.published_at, d.delay_seconds, d.content_hash) for d in docs.values()]
        counts = await self.services.store.run(store.import_articles, channel_id, inputs,
                                               self.services.clock.now(), keep)
        self.mark_changed(channel_id)  # plan again at once: new articles may be due
        log.info("articles imported", channel_id=channel_id, folder=str(folder), imported=counts.imported,
                 updated=counts.updated, unchanged=counts.unchanged, withdrawn=counts.withdrawn, problems=len(problems))
        return {"imported": counts.imported, "updated": counts.updated, "unchanged": counts.unchanged,
                "withdrawn": counts.withdrawn, "cancelled": counts.cancelled,
                "problems": sorted(problems, key=lambda p: p["file"])}

    # ------------------------------------------------------------------ rendering

    async def rendered(self, bodies: list[store.ArticleBody], channel: store.ChannelInfo) -> Rendered:
        key = (tuple((b.id, b.version) for b in bodies), template_version(), channel.name, channel.postal_address)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self.cache_hits += 1
            return hit
        self.cache_misses += 1
        pieces = [Piece(b.id, b.version, b.title, b.format, b.body, b.url) for b in bodies]
        result = await trio.to_thread.run_sync(
            lambda: render_email(pieces, channel=channel.name, postal_address=channel.postal_address))
        self._cache[key] = result
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return result

    async def preview(self, article_id: int, user_id: int | None) -> dict[str, Any]:
        inputs = await self.services.store.run(store.preview_inputs, article_id, user_id)
        rendered = await self.rendered([inputs.article], inputs.channel)
        r = inputs.recipient
        recipient = (Recipient(r.kuloo_id, r.email, r.first_name, r.last_name) if r is not None
                     else Recipient("preview", "subscriber@example.com", "Subscriber"))
        msg = build(rendered, self.envelope(inputs.channel), recipient, self.signer(),
                    msg_id=f"<preview.{article_id}@{sender_domain(inputs.channel.sender)}>",
                    date=self.services.clock.now())
        html_part = msg.get_body(("html",)).get_content()
        text_part = msg.get_body(("plain",)).get_content()
        warnings = list(rendered.warnings)
        if not inputs.channel.sender:
            warnings.append("the channel has no sender address: emails cannot be sent")
        if not inputs.channel.postal_address:
            warnings.append("the channel has no postal address for the footer")
        return {"subject": rendered.subject, "html": html_part, "text": text_part,
                "headers": {k: str(v) for k, v in msg.items() if k.lower() not in ("content-type", "mime-version")},
                "size_bytes": len(html_part.encode()), "warnings": warnings}

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
            times = [t for t in (self.next_due,) if t is not None]
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

        return [ClockJob("delivery", due, self._scheduled), Job("delivery-changes", changed, self._changes)]

    async def _scheduled(self) -> None:
        await self.run(None)

    async def _changes(self) -> None:
        """Plan the channels changed since their last pass (all of them if one was unnamed)."""
        if EVERY in self._dirty:
            await self.run(None)
        else:
            await self.run(None, only=set(self._dirty))

    async def run(self, channel_id: int | None, *, only: set[int] | None = None) -> PassCounts:
        """One pass now: plan and send what is due, per channel (``only``: just these)."""
        async with self._lock:
            now = self.services.clock.now()
            if only is not None:
                for cid in only:
                    self._take_changed(cid)
                ids = sorted(set(only) & set(await self.services.store.run(store.channel_ids)))
            else:
                self._take_changed(channel_id)
                ids = [channel_id] if channel_id is not None else await self.services.store.run(store.channel_ids)
            total = PassCounts()
            next_due: list[datetime] = []
            for cid in ids:
                # PostgreSQL: one daemon at a time plans and sends a channel (services.Leases).
                async with self.services.leases.hold("delivery", cid) as held:
                    # Fencing: each SMTP transaction first checks that the lease is certainly
                    # still ours (``Leases.fence``); a refusal ends the channel's pass.
                    fence = self.services.leases.fence("delivery", cid)
                    for _ in range(3) if held else ():  # a sent email can make the next one due at once (delay 0)
                        queued, due = await self._plan(cid)
                        total.queued += queued
                        sent_before = total.sent
                        await self._send_channel(cid, total, fence)
                        if due is not None:
                            next_due.append(due)
                        if queued == 0 or total.sent == sent_before:
                            break
            if channel_id is None and only is None:
                self.last_pass = now
                self.next_due = min(next_due, default=None)
            elif next_due:
                self.next_due = min([*next_due, *([self.next_due] if self.next_due else [])])
            if total.queued or total.sent or total.failed or total.uncertain:
                log.info("delivery pass", channel_id=channel_id, queued=total.queued, sent=total.sent,
                         failed=total.failed, uncertain=total.uncertain)
            return total

    async def _plan(self, channel_id: int) -> tuple[int, datetime | None]:
        """Plan a whole channel, a page of users per unit of work; (queued, next due)."""
        now = self.services.clock.now()
        queued, dues, after = 0, [], 0
        while after is not None:
            q, due, after = await self.services.store.run(
                store.plan, channel_id, now, schedule.decide, sender_domain, after)
            queued += q
            if due is not None:
                dues.append(due)
        return queued, min(dues, default=None)

    async def _send_channel(self, channel_id: int, total: PassCounts,
                            fence: Callable[[], None] = lambda: None) -> None:
        batch_size = self.config["delivery.batch_size"]
        while True:
            claimed = await self.services.store.run(store.claim, channel_id, self.services.clock.now(), batch_size)
            if not claimed:
                return
            lost: list[LeaseLost] = []
            results = await self._send_batch(channel_id, claimed, fence, lost)
            try:
                # What the transport did is recorded even when the pass is being cancelled (a
                # stop, a lease lost while this daemon was frozen): else it stays ``sending``
                # and becomes ``uncertain`` though the daemon knew what became of it.
                with trio.CancelScope(shield=True):
                    recorded = await self.services.store.run(
                        store.record, results, self.services.clock.now(),
                        self.config["delivery.max_attempts"], self.config["delivery.retry_seconds"])
            except StoreUnavailable:
                self._record_when_back(channel_id, results)
                raise
            total.sent += recorded.sent
            total.failed += recorded.failed
            total.uncertain += recorded.uncertain
            if lost:
                raise lost[0]  # what was sent is recorded; the rest is not ours to send
            if recorded.sent == 0:
                return  # nothing went through: leave the rest for the next pass (retry back-off)

    async def _send_batch(self, channel_id: int, claimed: list[store.Claimed],
                          fence: Callable[[], None] = lambda: None,
                          lost: list[LeaseLost] | None = None) -> list[store.SendResult]:
        """Send the claimed messages; a fence refusal stops before the next message and is
        appended to ``lost`` (the messages not sent go back as ``unsent``)."""
        lost = [] if lost is None else lost
        ids = sorted({a for c in claimed for a in c.articles})
        bodies = await self.services.store.run(store.article_bodies, ids)
        transport = self.transport()
        results: list[store.SendResult] = []
        try:
            await trio.to_thread.run_sync(transport.open)
        except TransportError as exc:
            log.warning("transport unavailable", channel_id=channel_id, error=str(exc))
            return [store.SendResult(c.id, "not_sent", str(exc)) for c in claimed]
        interval = 1.0 / self.config["delivery.messages_per_second"]
        frames: dict = {}
        outgoing: list[tuple[int, bytes, str, str]] = []  # (outbox id, message, envelope sender, recipient)
        for item in claimed:
            parts = [bodies[a] for a in item.articles if a in bodies]
            sender = parseaddr(item.channel.sender)[1]
            if not parts or not sender:
                why = "its articles are gone" if not parts else "the channel has no sender address"
                results.append(store.SendResult(item.id, "not_sent", why, permanent=True))
                continue
            rendered = await self.rendered(parts, item.channel)
            envelope = self.envelope(item.channel)
            frame_key = (id(rendered), envelope)
            if frame_key not in frames:
                frames[frame_key] = frame(rendered, envelope)
            r = item.recipient
            try:
                data = build_bytes(rendered, envelope, Recipient(r.kuloo_id, r.email, r.first_name, r.last_name),
                                   self.signer(), msg_id=item.message_id, date=self.services.clock.now(),
                                   frame_=frames[frame_key])
            except UnicodeEncodeError:
                # Messages are 7-bit: a non-ASCII address (sami.garcía@…) would need SMTPUTF8.
                # That recipient fails, for good; the batch goes on (it used to stay "sending").
                results.append(store.SendResult(
                    item.id, "not_sent", "the address is not ASCII: mail to it needs SMTPUTF8, which Kuloo "
                    "does not send; correct the address", permanent=True))
                continue
            outgoing.append((item.id, data, sender, r.email))
        try:
            # A few messages per trip to the worker thread: cheap, and a shutdown waits at
            # most for one chunk (a thread is not interrupted mid-message).
            for first in range(0, len(outgoing), SEND_CHUNK):
                chunk = outgoing[first:first + SEND_CHUNK]
                sent = await trio.to_thread.run_sync(
                    self._send_chunk, transport, chunk, channel_id, interval, fence, lost)
                results.extend(sent)
                if len(sent) < len(chunk):  # no connection again, or fenced: the rest waits
                    break
        except BaseException:
            # Cancelled between chunks (shutdown): record what was handed over below.
            with trio.CancelScope(shield=True):
                await self.services.store.run(
                    store.record, self._with_unsent(results, claimed), self.services.clock.now(),
                    self.config["delivery.max_attempts"], self.config["delivery.retry_seconds"])
            raise
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(transport.close)
        return self._with_unsent(results, claimed)

    def _record_when_back(self, channel_id: int, results: list[store.SendResult]) -> None:
        """The store could not record what the transport did (unreachable, a full disk): it
        is recorded as soon as the store answers again — not left ``sending`` until a restart."""
        log.warning("delivery outcomes kept until the store answers again", channel_id=channel_id,
                    messages=len(results))
        now, attempts, retry = (self.services.clock.now(), self.config["delivery.max_attempts"],
                                self.config["delivery.retry_seconds"])
        self.services.store.health.on_recovery(
            f"record {len(results)} delivery outcomes of channel {channel_id}",
            lambda: store.record(results, now, attempts, retry))

    @staticmethod
    def _with_unsent(results: list[store.SendResult], claimed: list[store.Claimed]) -> list[store.SendResult]:
        """Every claimed message not handed to the transport goes back to the queue as it was."""
        done = {x.id for x in results}
        return results + [store.SendResult(c.id, "unsent") for c in claimed if c.id not in done]

    def _send_chunk(self, transport, chunk: list[tuple[int, bytes, str, str]], channel_id: int,
                    interval: float, fence: Callable[[], None] = lambda: None,
                    lost: list[LeaseLost] | None = None) -> list[store.SendResult]:
        """In a worker thread: send each message at the channel's pace, reconnecting once if
        needed; the fence is checked right before each SMTP transaction (after the pace's
        wait): on a refusal the chunk stops there and the refusal goes to ``lost``."""
        out: list[store.SendResult] = []
        for outbox_id, data, sender, recipient in chunk:
            now = time.monotonic()
            turn = max(now, self._pace.get(channel_id, now))
            self._pace[channel_id] = turn + interval
            if turn > now:
                time.sleep(turn - now)
            if getattr(transport, "conn", True) is None:  # the connection broke earlier in this batch
                try:
                    transport.open()
                except TransportError:
                    return out
            try:
                fence()
            except LeaseLost as exc:
                if lost is not None:
                    lost.append(exc)
                return out
            result = transport.send(data, sender, recipient)
            out.append(store.SendResult(outbox_id, OUTCOMES[result.outcome], result.detail, result.permanent))
        return out

    # ------------------------------------------------------------------ users

    async def progress(self, user_id: int) -> dict[str, Any]:
        state, metas, titles, sent = await self.services.store.run(store.progress_inputs, user_id)
        now = self.services.clock.now()
        anchor = schedule.sequence_anchor(state.tags, state.anchor, now)
        articles = [schedule.ArticleInfo(m.id, m.tags, m.published_at, m.delay_seconds, m.withdrawn) for m in metas]
        step = schedule.next_in_sequence(articles, state.tags, state.taken, anchor, now)
        nxt = None
        if step is not None:
            nxt = {"article": step.article, "title": titles.get(step.article, ""), "due_at": step.due_at}
        else:  # one on its way: show it as next, due now
            waiting = [a for a, t in state.taken.items() if t is None]
            if waiting:
                nxt = {"article": waiting[0], "title": titles.get(waiting[0], ""), "due_at": now}
        return {"sent": [{"article": s.article, "title": s.title, "sent_at": s.sent_at} for s in sent], "next": nxt}

    async def reset_sequence(self, user_id: int) -> int:
        cleared = await self.services.store.run(store.reset_sequence, user_id, self.services.clock.now())
        self.dirty = True
        return cleared


def _read_folder(folder: Path) -> list[tuple[str, str | Exception]]:
    out: list[tuple[str, str | Exception]] = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in path.relative_to(folder).parts) or not path.is_file():
            continue
        if path.suffix.lower() not in documents.EXTENSIONS:
            continue
        if len(out) >= MAX_FILES:
            break
        try:
            out.append((rel, path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            out.append((rel, exc))
    return out

