"""What is due when: the pure decisions of delivery (docs/delivery.md, "Sequences", "Digests").

Plain data in, plain data out; no clock (``now`` is an argument), no store, no I/O.

- ``next_in_sequence``: a user's next promo article and when it is due.
- ``digest_due`` / ``add_period``: digests one period after the last (1 day, 7 days,
  1 calendar month, in UTC); ``digest_articles``: which articles go in one.
- ``sequence_anchor``: what getting promo tags does to the start of a sequence.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..vocabulary import Frequency


@dataclass(frozen=True)
class ArticleInfo:
    id: int
    tags: tuple[str, ...]
    published_at: datetime | None
    delay_seconds: int = 0
    withdrawn: bool = False

    def live(self, now: datetime) -> bool:
        return not self.withdrawn and self.published_at is not None and self.published_at <= now


@dataclass(frozen=True)
class Due:
    article: int
    due_at: datetime


def sequence_order(
    articles: Iterable[ArticleInfo], tags: Iterable[str], now: datetime
) -> list[ArticleInfo]:
    """The user's sequence: live articles carrying any of ``tags``, by publication date."""
    wanted = set(tags)
    chosen = [a for a in articles if a.live(now) and wanted.intersection(a.tags)]
    return sorted(chosen, key=lambda a: (a.published_at, a.id))


def next_in_sequence(
    articles: Sequence[ArticleInfo],
    tags: Iterable[str],
    taken: Mapping[int, datetime | None],
    anchor: datetime | None,
    now: datetime,
) -> Due | None:
    """The next unsent article of the user's sequence and when it is due, or None.

    ``taken``: article id -> when it was sent (None: queued, not sent yet) since the last
    Reset; ``anchor``: when the user first got a promo tag, or the Reset. The next article
    is due its delay after the previous sequence email (or after the anchor), and never
    before it is published. While one is still on its way, nothing else is due: the next
    delay counts from when that one is actually sent, so downtime never causes a burst.
    """
    if any(sent is None for sent in taken.values()):
        return None
    order = sequence_order(articles, tags, now)
    upcoming = next((a for a in order if a.id not in taken), None)
    if upcoming is None:
        return None
    sent_times = [t for t in taken.values() if t is not None]
    previous = max(sent_times) if sent_times else anchor
    if previous is None:
        return None  # no anchor yet: the caller sets it when it first sees the tags
    assert upcoming.published_at is not None  # live, so published
    due = max(previous + timedelta(seconds=upcoming.delay_seconds), upcoming.published_at)
    return Due(upcoming.id, due)


def sequence_anchor(
    new_tags: Iterable[str], anchor: datetime | None, now: datetime
) -> datetime | None:
    """The sequence anchor after a tag change: set when the user first gets a promo tag, else kept.

    Removing tags never clears progress, so a tag added back continues where it left off.
    """
    if anchor is None and set(new_tags):
        return now
    return anchor


def add_period(start: datetime, frequency: Frequency) -> datetime:
    """One digest period after ``start``: a day, 7 days, or a calendar month (day clamped)."""
    if frequency == Frequency.DAILY:
        return start + timedelta(days=1)
    if frequency == Frequency.WEEKLY:
        return start + timedelta(days=7)
    if frequency == Frequency.MONTHLY:
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        day = min(start.day, calendar.monthrange(year, month)[1])
        return start.replace(year=year, month=month, day=day)
    raise ValueError(f"no digest period for {frequency}")


def digest_due(
    frequency: Frequency | str, unsubscribed: bool, last_digest: datetime | None, joined: datetime
) -> datetime | None:
    """When the user's next digest window closes; None when they get no digests."""
    frequency = Frequency(frequency)
    if unsubscribed or frequency == Frequency.DISABLED:
        return None
    return add_period(last_digest or joined, frequency)


def digest_articles(articles: Iterable[ArticleInfo], since: datetime, until: datetime) -> list[int]:
    """Newsletter articles (no tags) published in (``since``, ``until``], oldest first."""
    chosen = [
        a
        for a in articles
        if not a.tags
        and not a.withdrawn
        and a.published_at is not None
        and since < a.published_at <= until
    ]
    return [a.id for a in sorted(chosen, key=lambda a: (a.published_at, a.id))]


@dataclass
class Plan:
    """What one planning pass over a channel decides at ``now``."""

    anchors: dict[int, datetime | None] = field(default_factory=dict)  # user -> new sequence anchor
    sequence: list[tuple[int, int]] = field(default_factory=list)  # (user, article) to queue now
    digests: list[tuple[int, list[int]]] = field(
        default_factory=list
    )  # (user, articles) to queue now
    digest_windows_closed: list[int] = field(
        default_factory=list
    )  # users whose digest period ends now
    next_due: datetime | None = None  # the earliest later time something becomes due
    # user -> the earliest later time something may become due for them without any change
    # (None: nothing, until the user, their sequence or the articles change)
    user_due: dict[int, datetime | None] = field(default_factory=dict)


def decide(articles: Sequence[ArticleInfo], users: Sequence, now: datetime) -> Plan:
    """One pass over a channel: each user's next sequence email and digest, if due now.

    ``users`` carry ``id``, ``tags``, ``unsubscribed``, ``frequency``, ``anchor``,
    ``last_digest_at``, ``joined`` and ``taken`` (see ``store.delivery.UserState``).
    """
    articles = [
        a
        if isinstance(a, ArticleInfo)
        else ArticleInfo(a.id, tuple(a.tags), a.published_at, a.delay_seconds, a.withdrawn)
        for a in articles
    ]
    plan = Plan()
    later: list[datetime] = []
    upcoming_publications = [
        a.published_at
        for a in articles
        if a.published_at is not None and a.published_at > now and not a.withdrawn
    ]
    upcoming_by_tag: dict[str, datetime] = {}  # tag -> its earliest future publication
    for a in articles:
        if a.published_at is not None and a.published_at > now and not a.withdrawn:
            for tag in a.tags:
                if tag not in upcoming_by_tag or a.published_at < upcoming_by_tag[tag]:
                    upcoming_by_tag[tag] = a.published_at
    for user in users:
        plan.user_due[user.id] = None
        if user.unsubscribed:
            continue
        mine: list[datetime] = []  # when something may next be due for this user
        anchor = sequence_anchor(user.tags, user.anchor, now)
        if anchor != user.anchor:
            plan.anchors[user.id] = anchor
        step = next_in_sequence(articles, user.tags, user.taken, anchor, now)
        if step is not None and step.due_at <= now:
            plan.sequence.append((user.id, step.article))
        elif step is not None:
            mine.append(step.due_at)
        # An article of their sequence published later may become their next one. (An email
        # on its way makes nothing due: sending it is what makes the next one due.)
        mine += [upcoming_by_tag[t] for t in user.tags if t in upcoming_by_tag]
        due = digest_due(user.frequency, user.unsubscribed, user.last_digest_at, user.joined)
        if due is not None and due <= now:
            plan.digest_windows_closed.append(user.id)
            chosen = digest_articles(articles, user.last_digest_at or user.joined, now)
            if chosen:
                plan.digests.append((user.id, chosen))
            mine.append(add_period(now, Frequency(user.frequency)))
        elif due is not None:
            mine.append(due)
        plan.user_due[user.id] = min(mine, default=None)
        later += mine
    if upcoming_publications:
        later.append(min(upcoming_publications))  # a sequence may become due when it is published
    plan.next_due = min(later, default=None)
    return plan
