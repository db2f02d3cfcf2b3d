"""Articles, sequence progress and the outbox: the use cases behind delivery (store side).

Each function is one unit of work for ``Store.run`` (one crossing, one transaction where
it writes) and returns typed results. The decisions (what is due, what goes in a digest)
are not made here: ``plan`` takes them as a pure ``decide`` function from
``delivery.schedule`` and only reads its inputs and writes its answer, in one
transaction. Outbox states move only through ``vocabulary.outbox_move``.

``plan`` reads only the users due (``User.next_due_at`` null or past) and writes back each
one's next time; whatever changes a user's next email makes them due again (``replan``,
or ``store.users`` nulling the column on a change).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from tortoise.expressions import F, Q, Subquery
from tortoise.functions import Count
from tortoise.transactions import in_transaction

from ..vocabulary import Frequency, OutboxState, outbox_after_crash, outbox_move
from . import NotFound
from .models import Article, Channel, OutboxMessage, SequenceProgress, User, UserTag

SEQUENCE = "sequence"
DIGEST = "digest"


# --------------------------------------------------------------------------- articles


@dataclass(frozen=True)
class ArticleInput:
    key: str
    source_file: str
    title: str
    format: str
    body: str
    url: str
    tags: tuple[str, ...]
    published_at: datetime | None
    delay_seconds: int
    content_hash: str
    summary: str = ""


@dataclass(frozen=True)
class ImportCounts:
    imported: int = 0
    updated: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    cancelled: int = 0  # queued emails cancelled because their article was withdrawn
    # Each article withdrawn (or, in a dry run, that would be): id, key, title, file.
    withdrawn_articles: tuple[dict[str, Any], ...] = ()
    # In a dry run: the keys that would be new, changed, or active again.
    new_keys: tuple[str, ...] = ()
    changed_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class ArticleSummary:
    id: int
    channel: int
    key: str
    source_file: str
    title: str
    format: str
    tags: tuple[str, ...]
    published_at: datetime | None
    delay_seconds: int
    version: int
    url: str
    withdrawn_at: datetime | None


@dataclass(frozen=True)
class ArticleBody:
    id: int
    version: int
    title: str
    format: str
    body: str
    url: str
    summary: str = ""


@dataclass(frozen=True)
class ChannelInfo:
    id: int
    name: str
    sender: str
    postal_address: str


@dataclass(frozen=True)
class RecipientInfo:
    id: int
    kuloo_id: str
    email: str
    first_name: str
    last_name: str


def _summary(a: Article) -> ArticleSummary:
    return ArticleSummary(
        a.id,
        a.channel_id,
        a.key,
        a.source_file,
        a.title,
        a.format,
        tuple(a.tags or ()),
        a.published_at,
        a.delay_seconds,
        a.version,
        a.url,
        a.withdrawn_at,
    )


def _body(a: Article) -> ArticleBody:
    return ArticleBody(a.id, a.version, a.title, a.format, a.body, a.url, a.summary)


def _channel_info(c: Channel) -> ChannelInfo:
    return ChannelInfo(c.id, c.name, c.sender, c.postal_address)


async def cancel_queued(query, now: datetime, reason: str) -> int:
    """Cancel queued (and failed-awaiting-retry) messages; free their sequence slots."""
    rows = await query.filter(state__in=[OutboxState.QUEUED.value]).all()
    for row in rows:
        outbox_move(OutboxState(row.state), OutboxState.CANCELLED)
    ids = [r.id for r in rows]
    if ids:
        await OutboxMessage.filter(id__in=ids).update(
            state=OutboxState.CANCELLED.value, last_error=reason
        )
        # A cancelled sequence email was never sent: the article is free for later.
        await SequenceProgress.filter(outbox_id__in=ids, sent_at=None).delete()
        await replan([r.user_id for r in rows if r.kind == SEQUENCE])
    return len(ids)


def _under(source_file: str, folder: str) -> bool:
    """Whether a root-relative ``source_file`` lies under the root-relative ``folder``."""
    folder = folder.strip("/")
    return folder in ("", ".") or source_file == folder or source_file.startswith(folder + "/")


def _adopt(
    existing: dict[str, Article], docs: Sequence[ArticleInput], defaulted: set[str]
) -> dict[str, str]:
    """Old keys (the path relative to the folder once imported) adopted by their new key.

    Before keys were relative to ``[articles] root``, a file's default key was its path
    relative to the imported folder (``key == source_file``). A document whose key is its
    root-relative path, with no article of that key yet, takes over the one old article
    whose key is a trailing part of that path (``welcome.md`` for ``seq/welcome.md``).
    Returns new key -> old key.
    """
    taken = {d.key for d in docs}
    adopted: dict[str, str] = {}
    for doc in docs:
        if doc.key not in defaulted or doc.key in existing:
            continue
        old = [
            a.key
            for a in existing.values()
            if a.key == a.source_file
            and a.key not in taken
            and a.key not in adopted.values()
            and doc.key.endswith("/" + a.key)
        ]
        if len(old) == 1:
            adopted[doc.key] = old[0]
    return adopted


async def import_articles(
    channel_id: int,
    docs: Sequence[ArticleInput],
    now: datetime,
    keep: Sequence[str] = (),
    *,
    folder: str = ".",
    defaulted: Sequence[str] = (),
    dry_run: bool = False,
) -> ImportCounts:
    """Bring the articles under ``folder`` in line with its files: new, changed, same, gone.

    Keys and ``source_file`` are relative to ``[articles] root``; ``folder`` is the imported
    folder, relative to it ("." is the root). Only articles whose file lay under ``folder``
    can be withdrawn. ``defaulted``: keys that are the file's path (no front-matter ``id``),
    which may adopt an old folder-relative key (``_adopt``). ``keep``: keys whose file is
    there but could not be read this time (a clip whose page failed): they stay as they
    were, neither updated nor withdrawn. ``dry_run``: the same answer, nothing written.
    """
    async with in_transaction():
        if not await Channel.exists(id=channel_id):
            raise NotFound(f"no channel {channel_id}")
        existing = {a.key: a for a in await Article.filter(channel_id=channel_id)}
        for new_key, old_key in _adopt(existing, docs, set(defaulted)).items():
            old_row = existing.pop(old_key)
            if not dry_run:
                await Article.filter(id=old_row.id).update(key=new_key, source_file=new_key)
            old_row.key = old_row.source_file = new_key
            existing[new_key] = old_row
        imported = updated = unchanged = 0
        new_keys: list[str] = []
        changed_keys: list[str] = []
        for doc in docs:
            values: dict[str, Any] = dict(
                source_file=doc.source_file,
                title=doc.title,
                format=doc.format,
                body=doc.body,
                url=doc.url,
                tags=list(doc.tags),
                published_at=doc.published_at,
                delay_seconds=doc.delay_seconds,
                content_hash=doc.content_hash,
                summary=doc.summary,
            )
            row = existing.get(doc.key)
            if row is None:
                new_keys.append(doc.key)
                if not dry_run:
                    await Article.create(
                        channel_id=channel_id,
                        key=doc.key,
                        version=1,
                        created_at=now,
                        updated_at=now,
                        **values,
                    )
                imported += 1
            elif row.content_hash == doc.content_hash and row.withdrawn_at is None:
                unchanged += 1
                # moved, or named relative to the folder before
                if row.source_file != doc.source_file and not dry_run:
                    await Article.filter(id=row.id).update(source_file=doc.source_file)
            else:
                # Changed, or withdrawn and back: active again. What was sent stays sent
                # (``SequenceProgress`` is kept), so nobody gets it twice.
                changed_keys.append(doc.key)
                changed = row.content_hash != doc.content_hash
                if not dry_run:
                    await Article.filter(id=row.id).update(
                        version=row.version + (1 if changed else 0),
                        withdrawn_at=None,
                        updated_at=now,
                        **values,
                    )
                updated += 1
        present = {d.key for d in docs} | set(keep)
        gone_rows = sorted(
            (
                a
                for a in existing.values()
                if a.key not in present and a.withdrawn_at is None and _under(a.source_file, folder)
            ),
            key=lambda a: a.source_file,
        )
        gone = [a.id for a in gone_rows]
        named = tuple(
            {"id": a.id, "key": a.key, "title": a.title, "file": a.source_file} for a in gone_rows
        )
        if dry_run:
            return ImportCounts(
                imported,
                updated,
                unchanged,
                len(gone),
                0,
                named,
                tuple(new_keys),
                tuple(changed_keys),
            )
        # Who may have a new next email: the users holding a tag of an article that came,
        # changed or went (its old tags and its new ones). Newsletter articles change no
        # one's timing: digests come at the user's period.
        touched = {
            d.key
            for d in docs
            if d.key not in existing
            or not (
                existing[d.key].content_hash == d.content_hash
                and existing[d.key].withdrawn_at is None
            )
        }
        tags = {t for d in docs if d.key in touched for t in d.tags}
        tags |= {
            t for a in existing.values() if a.key in touched or a.id in gone for t in (a.tags or ())
        }
        if tags:
            await User.filter(
                channel_id=channel_id,
                id__in=Subquery(
                    UserTag.filter(channel_id=channel_id, tag__in=sorted(tags)).values("user_id")
                ),
            ).update(next_due_at=None)
        cancelled = 0
        if gone:
            await Article.filter(id__in=gone).update(withdrawn_at=now, updated_at=now)
            cancelled = await cancel_queued(
                OutboxMessage.filter(article_id__in=gone), now, "article withdrawn"
            )
            # Digests that included a withdrawn article are cancelled too (rare; simple and safe).
            for digest in await OutboxMessage.filter(
                channel_id=channel_id, kind=DIGEST, state=OutboxState.QUEUED.value
            ):
                if set(digest.articles or ()) & set(gone):
                    cancelled += await cancel_queued(
                        OutboxMessage.filter(id=digest.id), now, "article withdrawn"
                    )
        return ImportCounts(
            imported,
            updated,
            unchanged,
            len(gone),
            cancelled,
            named,
            tuple(new_keys),
            tuple(changed_keys),
        )


async def channel_info(channel_id: int) -> ChannelInfo:
    channel = await Channel.get_or_none(id=channel_id)
    if channel is None:
        raise NotFound(f"no channel {channel_id}")
    return _channel_info(channel)


async def list_articles(channel_id: int) -> list[ArticleSummary]:
    if not await Channel.exists(id=channel_id):
        raise NotFound(f"no channel {channel_id}")
    rows = await Article.filter(channel_id=channel_id).order_by("published_at", "id")
    return [_summary(a) for a in rows]


@dataclass(frozen=True)
class PreviewInputs:
    article: ArticleBody
    channel: ChannelInfo
    recipient: RecipientInfo | None


async def preview_inputs(article_id: int, user_id: int | None) -> PreviewInputs:
    article = await Article.get_or_none(id=article_id).select_related("channel")
    if article is None:
        raise NotFound(f"no article {article_id}")
    recipient = None
    if user_id is not None:
        user = await User.get_or_none(id=user_id, channel_id=article.channel_id)
        if user is None:
            raise NotFound(f"no user {user_id} in the article's channel")
        recipient = RecipientInfo(
            user.id, user.kuloo_id, user.email, user.first_name, user.last_name
        )
    return PreviewInputs(_body(article), _channel_info(article.channel), recipient)


async def article_bodies(ids: Sequence[int]) -> dict[int, ArticleBody]:
    return {a.id: _body(a) for a in await Article.filter(id__in=list(ids))}


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class ArticleMeta:
    id: int
    tags: tuple[str, ...]
    published_at: datetime | None
    delay_seconds: int
    withdrawn: bool


@dataclass(frozen=True)
class UserState:
    id: int
    tags: tuple[str, ...]
    unsubscribed: bool
    frequency: str
    anchor: datetime | None  # promo_started_at
    last_digest_at: datetime | None
    joined: datetime
    taken: dict[int, datetime | None]  # article -> sent_at (None: on its way)


# ``decide(articles, users, now)`` answers with an object carrying ``anchors``, ``sequence``,
# ``digests``, ``digest_windows_closed`` and ``next_due`` (``delivery.schedule.Plan``).
Decide = Callable[[list[ArticleMeta], list[UserState], datetime], Any]


def _eligible(user: User) -> bool:
    # A signup not confirmed yet (double opt-in) receives nothing; the field arrives with users.
    return not getattr(user, "pending", False)


# Users planned per unit of work: a large channel is planned in several short transactions,
# so control calls and the sync interleave with it, and no query carries more ids than
# SQLite's variable limit.
PLAN_USERS = 1000

# ``User.next_due_at`` of a user for whom nothing becomes due by time alone (unsubscribed,
# no tags and no digests, a sequence finished or waiting for an email on its way): only a
# change makes them due again. A far date rather than null, because null means "plan now".
NOT_DUE = datetime(9999, 12, 31, tzinfo=UTC)


# The columns a plan reads (``only``): the JSON and text columns are not parsed for nothing.
_PLAN_FIELDS = (
    "id",
    "promo_tags",
    "unsubscribed",
    "bounce_status",
    "frequency",
    "promo_started_at",
    "last_digest_at",
    "created_at",
    "next_due_at",
)
_FEW_TIMES = 20  # up to this many distinct next times in a page: one UPDATE per time
_LATER = timedelta(microseconds=1)  # decide answers later times only; never leave a user due now


def _due_now(now: datetime) -> Q:
    """Users a pass must plan: never planned or changed since (null), or due by now."""
    return Q(next_due_at__isnull=True) | Q(next_due_at__lte=now)


async def replan(user_ids: Sequence[int]) -> None:
    """Make these users due at once (something that decides their next email changed).

    Every writer that changes what ``decide`` would answer for a user calls this (or sets
    ``next_due_at`` to null itself, as ``store.users`` does) inside its transaction.
    """
    ids = sorted(set(user_ids))
    for first in range(0, len(ids), PLAN_USERS):
        await User.filter(id__in=ids[first : first + PLAN_USERS]).update(next_due_at=None)


async def due_users(channel_id: int, now: datetime) -> int:
    """How many of the channel's users a pass at ``now`` would read (benchmarks, tests)."""
    return await User.filter(channel_id=channel_id).filter(_due_now(now)).count()


async def plan(
    channel_id: int,
    now: datetime,
    decide: Decide,
    domain_of: Callable[[str], str],
    after: int = 0,
    limit: int | None = None,
) -> tuple[int, datetime | None, int | None]:
    """Queue what is due for the channel's next ``limit`` due users (one transaction);
    returns (queued, next due, the cursor to continue with — None at the end).

    Only users due by ``now`` are read (``next_due_at`` null or past, indexed ranges);
    each planned user's next due time is written back in the same transaction, so a crash
    leaves them due. The channel's next due time is the smallest one stored (an index
    lookup), the earliest upcoming publication, or the earliest retry.
    """
    limit = limit or PLAN_USERS
    async with in_transaction():
        channel = await Channel.get_or_none(id=channel_id)
        if channel is None:
            raise NotFound(f"no channel {channel_id}")
        articles = [
            ArticleMeta(
                a.id,
                tuple(a.tags or ()),
                a.published_at,
                a.delay_seconds,
                a.withdrawn_at is not None,
            )
            for a in await Article.filter(channel_id=channel_id)
        ]
        # Two index ranges of (channel_id, next_due_at), each read in index order: first the
        # users never planned or changed since (null), by id after the cursor; then those due
        # by time, earliest first — planned, they become due later, so the next page starts
        # at the front again. FOR UPDATE (PostgreSQL; SQLite serialises writers anyway): a
        # change committed meanwhile waits, and its "plan now" is not overwritten below.
        page = await (
            User.filter(channel_id=channel_id, next_due_at__isnull=True, id__gt=after)
            .order_by("id")
            .limit(limit)
            .only(*_PLAN_FIELDS)
            .select_for_update()
        )
        cursor = page[-1].id if page else after
        more = cursor if len(page) == limit else None
        if len(page) < limit:
            page += await (
                User.filter(channel_id=channel_id, next_due_at__lte=now)
                .order_by("next_due_at", "id")
                .limit(limit - len(page))
                .only(*_PLAN_FIELDS)
                .select_for_update()
            )
            more = cursor if len(page) == limit else None
        users = [u for u in page if _eligible(u)]
        progress = await SequenceProgress.filter(user_id__in=[u.id for u in users]) if users else []
        # A cancelled email (the user opted out, whoever cancelled it) was never sent: its
        # article is free again should they come back.
        waiting = [p.outbox_id for p in progress if p.sent_at is None and p.outbox_id is not None]
        cancelled = (
            set(
                await OutboxMessage.filter(
                    id__in=waiting, state=OutboxState.CANCELLED.value
                ).values_list("id", flat=True)
            )
            if waiting
            else set()
        )
        if cancelled:
            await SequenceProgress.filter(outbox_id__in=list(cancelled), sent_at=None).delete()
        taken: dict[int, dict[int, datetime | None]] = {}
        for p in progress:
            if p.outbox_id not in cancelled or p.sent_at is not None:
                taken.setdefault(p.user_id, {})[p.article_id] = p.sent_at
        states = [
            UserState(
                u.id,
                tuple(u.promo_tags or ()),
                u.unsubscribed or bool(u.bounce_status),  # a bounced address gets nothing
                u.frequency,
                u.promo_started_at,
                u.last_digest_at,
                u.created_at,
                taken.get(u.id, {}),
            )
            for u in users
        ]
        decisions = decide(articles, states, now)
        by_anchor: dict[datetime | None, list[int]] = {}
        for user_id, anchor in decisions.anchors.items():
            by_anchor.setdefault(anchor, []).append(user_id)
        for anchor, user_ids in by_anchor.items():  # one UPDATE per distinct time, not per user
            await User.filter(id__in=user_ids).update(promo_started_at=anchor)
        if decisions.digest_windows_closed:
            await User.filter(id__in=decisions.digest_windows_closed).update(last_digest_at=now)
        domain = domain_of(channel.sender)
        rows = [
            _new_message(channel_id, user_id, SEQUENCE, article_id, None, now, domain)
            for user_id, article_id in decisions.sequence
        ]
        rows += [
            _new_message(channel_id, user_id, DIGEST, None, article_ids, now, domain)
            for user_id, article_ids in decisions.digests
        ]
        if rows:
            await OutboxMessage.bulk_create(rows)
            # bulk_create leaves pk unset: read the ids back by their Message-IDs.
            ids = dict(
                await OutboxMessage.filter(message_id__in=[r.message_id for r in rows]).values_list(
                    "message_id", "id"
                )
            )
            await SequenceProgress.bulk_create(
                [
                    SequenceProgress(
                        user_id=r.user_id,
                        article_id=r.article_id,
                        outbox_id=ids[r.message_id],
                        sent_at=None,
                    )
                    for r in rows
                    if r.kind == SEQUENCE
                ]
            )
        queued = len(rows)
        # Unsubscribed (and bounced) users get nothing, including what was already queued.
        unsubscribed = [u.id for u in users if u.unsubscribed or u.bounce_status]
        if unsubscribed:
            await cancel_queued(OutboxMessage.filter(user_id__in=unsubscribed), now, "unsubscribed")
        disabled = [u.id for u in users if u.frequency == Frequency.DISABLED.value]
        if disabled:
            await cancel_queued(
                OutboxMessage.filter(user_id__in=disabled, kind=DIGEST), now, "digests disabled"
            )
        # What was read is planned: due again only at its next time (always after now, so a
        # later page of this pass does not read them again), or after a change.
        by_due: dict[datetime, list[User]] = {}
        for row in page:
            due = decisions.user_due.get(row.id) if _eligible(row) else None
            row.next_due_at = NOT_DUE if due is None else max(due, now + _LATER)
            by_due.setdefault(row.next_due_at, []).append(row)
        if (
            len(by_due) <= _FEW_TIMES
        ):  # the usual case: users share a few times (pass and send times)
            for due, rows_ in by_due.items():
                await User.filter(id__in=[r.id for r in rows_]).update(next_due_at=due)
        elif page:  # many (right after the upgrade, joined times): one CASE statement per batch
            await User.bulk_update(page, fields=["next_due_at"], batch_size=250)
        retry = await next_retry(channel_id, now)
        later = await (
            User.filter(channel_id=channel_id, next_due_at__gt=now, next_due_at__lt=NOT_DUE)
            .order_by("next_due_at")
            .first()
            .values_list("next_due_at", flat=True)
        )
        times = [t for t in (decisions.next_due, retry, later) if t is not None]
        # tortoise types values_list(..., flat=True) as tuples: these are datetimes.
        return queued, min(times, default=None), more  # type: ignore[return-value]


async def next_retry(channel_id: int, now: datetime) -> datetime | None:
    """When the channel's earliest queued message waiting out its back-off is due again."""
    at = await (
        OutboxMessage.filter(
            channel_id=channel_id, state=OutboxState.QUEUED.value, next_attempt_at__gt=now
        )
        .order_by("next_attempt_at")
        .first()
        .values_list("next_attempt_at", flat=True)
    )
    return cast("datetime | None", at)  # flat values_list: the bare value (typed as a tuple)


def _new_message(
    channel_id: int,
    user_id: int,
    kind: str,
    article_id: int | None,
    article_ids: list[int] | None,
    now: datetime,
    domain: str,
) -> OutboxMessage:
    # The Message-ID is made once, here: every attempt (and an admin's resend) carries it.
    return OutboxMessage(
        channel_id=channel_id,
        user_id=user_id,
        kind=kind,
        article_id=article_id,
        articles=article_ids,
        state=OutboxState.QUEUED.value,
        message_id=f"<kuloo.{channel_id}.{secrets.token_hex(10)}@{domain}>",
        created_at=now,
        updated_at=now,
        next_attempt_at=now,
    )


async def channel_ids() -> list[int]:
    return [c.id for c in await Channel.all().order_by("id")]


# --------------------------------------------------------------------------- sending


@dataclass(frozen=True)
class Claimed:
    id: int
    kind: str
    message_id: str
    articles: tuple[int, ...]
    recipient: RecipientInfo
    channel: ChannelInfo


async def claim(channel_id: int, now: datetime, limit: int) -> list[Claimed]:
    """Take up to ``limit`` due queued messages and mark them ``sending`` (committed before
    SMTP)."""
    async with in_transaction():
        rows = await (
            OutboxMessage.filter(channel_id=channel_id, state=OutboxState.QUEUED.value)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .filter(user__unsubscribed=False, user__bounce_status="")
            .order_by("id")
            .limit(limit)
            .select_related("user", "channel")
            # PostgreSQL: rows another daemon is claiming are skipped, never sent twice
            # (only the outbox rows are locked; SQLite ignores it: one daemon there).
            .select_for_update(skip_locked=True, of=("outbox_message",))
        )
        if not rows:
            return []
        for row in rows:
            outbox_move(OutboxState(row.state), OutboxState.SENDING)
        await OutboxMessage.filter(id__in=[r.id for r in rows]).update(
            state=OutboxState.SENDING.value, attempted_at=now, updated_at=now
        )
        out = []
        for r in rows:
            u = r.user
            ids = (r.article_id,) if r.kind == SEQUENCE else tuple(r.articles or ())
            # A sequence message's article is withdrawn, never deleted: its id is set.
            out.append(
                Claimed(
                    r.id,
                    r.kind,
                    r.message_id,
                    ids,  # type: ignore[arg-type]
                    RecipientInfo(u.id, u.kuloo_id, u.email, u.first_name, u.last_name),
                    _channel_info(r.channel),
                )
            )
        return out


@dataclass(frozen=True)
class SendResult:
    id: int
    outcome: str  # sent | not_sent | maybe_sent | unsent (never tried: back to the queue as is)
    detail: str = ""
    permanent: bool = False


@dataclass(frozen=True)
class Recorded:
    sent: int = 0
    failed: int = 0
    uncertain: int = 0
    retrying: int = 0


def retry_delay(attempts: int, first_seconds: float) -> timedelta:
    """Back-off before attempt ``attempts + 1``: doubles each time, capped at a day."""
    return timedelta(seconds=min(first_seconds * 2 ** max(attempts - 1, 0), 86_400))


async def record(
    results: Sequence[SendResult], now: datetime, max_attempts: int, retry_seconds: float
) -> Recorded:
    """Commit a batch's outcomes together (one transaction, a few statements for the common
    cases)."""
    failed = uncertain = retrying = 0
    async with in_transaction():
        rows = {r.id: r for r in await OutboxMessage.filter(id__in=[x.id for x in results])}
        sent_ids, unsent_ids = [], []
        for res in results:
            row = rows[res.id]
            current = OutboxState(row.state)
            if current != OutboxState.SENDING:
                # Repaired meanwhile by the daemon that took this channel's delivery lease over
                # (``sending`` became ``uncertain``: it may have left). This daemon knows better
                # for what the relay accepted (sent) and what it never handed over (fenced, or
                # never tried: back to the queue); anything else, or a row an admin resolved
                # since, stays as it is.
                if current == OutboxState.UNCERTAIN and res.outcome == "sent":
                    sent_ids.append(row.id)
                elif current == OutboxState.UNCERTAIN and res.outcome == "unsent":
                    outbox_move(current, OutboxState.QUEUED)
                    unsent_ids.append(row.id)
                continue
            if res.outcome == "sent":
                outbox_move(current, OutboxState.SENT)
                sent_ids.append(row.id)
            elif res.outcome == "unsent":
                # Never handed to the transport: back to the queue as it was (as a failure that
                # does not count as an attempt).
                outbox_move(outbox_move(current, OutboxState.FAILED), OutboxState.QUEUED)
                unsent_ids.append(row.id)
            elif res.outcome == "maybe_sent":
                outbox_move(current, OutboxState.UNCERTAIN)
                await OutboxMessage.filter(id=row.id).update(
                    state=OutboxState.UNCERTAIN.value,
                    attempts=row.attempts + 1,
                    last_error=res.detail,
                    updated_at=now,
                )
                uncertain += 1
            else:
                attempts = row.attempts + 1
                outbox_move(current, OutboxState.FAILED)
                if res.permanent or attempts >= max_attempts:
                    await OutboxMessage.filter(id=row.id).update(
                        state=OutboxState.FAILED.value,
                        attempts=attempts,
                        last_error=res.detail,
                        updated_at=now,
                    )
                    failed += 1
                else:  # failed -> queued again, later
                    await OutboxMessage.filter(id=row.id).update(
                        state=OutboxState.QUEUED.value,
                        attempts=attempts,
                        last_error=res.detail,
                        next_attempt_at=now + retry_delay(attempts, retry_seconds),
                        updated_at=now,
                    )
                    retrying += 1
        if sent_ids:
            await OutboxMessage.filter(id__in=sent_ids).update(
                state=OutboxState.SENT.value,
                sent_at=now,
                attempts=F("attempts") + 1,
                last_error="",
                updated_at=now,
            )
            await SequenceProgress.filter(outbox_id__in=sent_ids).update(sent_at=now)
            # A sequence email sent: the next one's delay counts from now.
            await replan([rows[i].user_id for i in sent_ids if rows[i].kind == SEQUENCE])
        if unsent_ids:
            await OutboxMessage.filter(id__in=unsent_ids).update(
                state=OutboxState.QUEUED.value, updated_at=now
            )
    return Recorded(len(sent_ids), failed, uncertain, retrying)


async def mark_interrupted(now: datetime) -> int:
    """At start-up: a message found ``sending`` may have left; it becomes ``uncertain``."""
    rows = await OutboxMessage.filter(state=OutboxState.SENDING.value)
    for row in rows:
        assert outbox_after_crash(OutboxState(row.state)) == OutboxState.UNCERTAIN
    if rows:
        await OutboxMessage.filter(id__in=[r.id for r in rows]).update(
            state=OutboxState.UNCERTAIN.value,
            last_error="the daemon stopped while sending",
            updated_at=now,
        )
    return len(rows)


# --------------------------------------------------------------------------- the admin's view


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    channel: int
    user: int
    email: str
    kind: str
    article: int | None
    articles: tuple[int, ...]
    state: OutboxState
    message_id: str
    attempts: int
    last_error: str
    created_at: datetime | None
    sent_at: datetime | None
    next_attempt_at: datetime | None


def _entry(r: OutboxMessage) -> OutboxEntry:
    return OutboxEntry(
        r.id,
        r.channel_id,
        r.user_id,
        r.user.email,
        r.kind,
        r.article_id,
        tuple(r.articles or ()),
        OutboxState(r.state),
        r.message_id,
        r.attempts,
        r.last_error,
        r.created_at,
        r.sent_at,
        r.next_attempt_at,
    )


async def list_outbox(
    channel_id: int, state: str | None, limit: int, after: int | None
) -> list[OutboxEntry]:
    q = OutboxMessage.filter(channel_id=channel_id)
    if state:
        q = q.filter(state=state)
    if after:
        q = q.filter(id__gt=after)
    return [_entry(r) for r in await q.order_by("id").limit(limit).select_related("user")]


async def outbox_counts(channel_id: int) -> dict[OutboxState, int]:
    """The channel's messages per state, every state present (one COUNT ... GROUP BY)."""
    if not await Channel.exists(id=channel_id):
        raise NotFound(f"no channel {channel_id}")
    rows = await (
        OutboxMessage.filter(channel_id=channel_id)
        .annotate(n=Count("id"))
        .group_by("state")
        .values_list("state", "n")
    )
    counts = dict.fromkeys(OutboxState, 0)
    for state, n in rows:
        counts[OutboxState(state)] = n
    return counts


async def resolve(outbox_id: int, as_: str, now: datetime) -> OutboxEntry:
    """The admin's decision on an uncertain (or failed) message: it was sent, or send it again."""
    async with in_transaction():
        row = await OutboxMessage.get_or_none(id=outbox_id).select_related("user")
        if row is None:
            raise NotFound(f"no outbox message {outbox_id}")
        current = OutboxState(row.state)
        if as_ == "sent":
            if current != OutboxState.UNCERTAIN:
                outbox_move(
                    current, OutboxState.SENT
                )  # raises: only an uncertain one may be declared sent
            # It left when it was handed over, not when the admin found out.
            row.state, row.sent_at = OutboxState.SENT.value, row.attempted_at or now
            await SequenceProgress.filter(outbox_id=row.id).update(sent_at=row.sent_at)
        else:
            row.state = outbox_move(current, OutboxState.QUEUED).value
            row.next_attempt_at = now
            row.attempts = 0  # sent again means a fresh set of attempts, not one more
        row.updated_at = now
        await row.save(
            update_fields=["state", "sent_at", "next_attempt_at", "attempts", "updated_at"]
        )
        await replan([row.user_id])
        return _entry(row)


async def resend_failed(channel_id: int, now: datetime) -> int:
    """Every failed message of the channel queued again with fresh attempts (after the relay
    is fixed); returns how many. Uncertain ones stay for the admin to decide one by one."""
    async with in_transaction():
        if not await Channel.exists(id=channel_id):
            raise NotFound(f"no channel {channel_id}")
        query = OutboxMessage.filter(channel_id=channel_id, state=OutboxState.FAILED.value)
        user_ids = cast("list[int]", list(await query.values_list("user_id", flat=True)))
        count = await query.update(
            state=OutboxState.QUEUED.value, attempts=0, next_attempt_at=now, updated_at=now
        )
        await replan(sorted(set(user_ids)))
        return count


@dataclass(frozen=True)
class SentItem:
    article: int
    title: str
    sent_at: datetime


async def progress_inputs(
    user_id: int,
) -> tuple[UserState, list[ArticleMeta], dict[int, str], list[SentItem]]:
    user = await User.get_or_none(id=user_id)
    if user is None:
        raise NotFound(f"no user {user_id}")
    rows = await SequenceProgress.filter(user_id=user_id).select_related("article")
    taken = {p.article_id: p.sent_at for p in rows}
    articles = await Article.filter(channel_id=user.channel_id)
    titles = {a.id: a.title for a in articles}
    metas = [
        ArticleMeta(
            a.id, tuple(a.tags or ()), a.published_at, a.delay_seconds, a.withdrawn_at is not None
        )
        for a in articles
    ]
    state = UserState(
        user.id,
        tuple(user.promo_tags or ()),
        user.unsubscribed,
        user.frequency,
        user.promo_started_at,
        user.last_digest_at,
        user.created_at,
        taken,
    )
    sent = sorted(
        (SentItem(p.article_id, p.article.title, p.sent_at) for p in rows if p.sent_at),
        key=lambda s: s.sent_at,
    )
    return state, metas, titles, sent


async def reset_sequence(user_id: int, now: datetime) -> int:
    """Reset: the sequence starts again from now; queued sequence mail is cancelled."""
    async with in_transaction():
        user = await User.get_or_none(id=user_id)
        if user is None:
            raise NotFound(f"no user {user_id}")
        await cancel_queued(
            OutboxMessage.filter(user_id=user_id, kind=SEQUENCE), now, "sequence reset"
        )
        cleared = await SequenceProgress.filter(user_id=user_id).delete()
        await User.filter(id=user_id).update(
            promo_started_at=now if user.promo_tags else None, next_due_at=None
        )
        return cleared
