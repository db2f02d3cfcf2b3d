"""The pure decisions of delivery: next sequence email, digest periods and contents, tag changes."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from kuloo_daemon.delivery.schedule import (
    ArticleInfo,
    Due,
    add_period,
    decide,
    digest_articles,
    digest_due,
    next_in_sequence,
    sequence_anchor,
)
from kuloo_daemon.vocabulary import Frequency

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)

# welcome: A (published first, 0 s), C (third, 2 days); onboarding: B (second, 1 day)
A = ArticleInfo(1, ("welcome",), T0 - 3 * D, 0)
B = ArticleInfo(2, ("onboarding",), T0 - 2 * D, 86400)
C = ArticleInfo(3, ("welcome",), T0 - 1 * D, 2 * 86400)
FUTURE = ArticleInfo(4, ("welcome",), T0 + 10 * D, 0)
GONE = ArticleInfo(5, ("welcome",), T0 - 4 * D, 0, withdrawn=True)
SEQ = [C, B, A, FUTURE, GONE]


@pytest.mark.parametrize(
    "tags, taken, anchor, now, expected",
    [
        # first email: its delay after the anchor (the user first got a promo tag)
        (("welcome", "onboarding"), {}, T0, T0, Due(1, T0)),
        # by publication date across both tags: B (onboarding) comes before C (welcome)
        (("welcome", "onboarding"), {1: T0}, T0, T0, Due(2, T0 + D)),
        (("welcome", "onboarding"), {1: T0, 2: T0 + D + H}, T0, T0 + 2 * D, Due(3, T0 + 3 * D + H)),
        # one tag only: B is not in this user's sequence
        (("welcome",), {1: T0}, T0, T0, Due(3, T0 + 2 * D)),
        # one on its way (queued, not sent): nothing else is due yet
        (("welcome", "onboarding"), {1: None}, T0, T0, None),
        # everything sent: nothing more (the unpublished one is not due yet)
        (("welcome", "onboarding"), {1: T0, 2: T0, 3: T0}, T0, T0 + 5 * D, None),
        # the future article becomes due once published, not before
        (("welcome",), {1: T0, 3: T0}, T0, T0 + 11 * D, Due(4, T0 + 10 * D)),
        # no promo tags: no sequence
        ((), {}, T0, T0, None),
        # tags the articles do not carry
        (("other",), {}, T0, T0, None),
        # no anchor yet: the caller sets one first
        (("welcome",), {}, None, T0, None),
        # removed and re-added: continues where it left off (taken is kept), never resends
        (("welcome",), {1: T0, 2: T0 + D}, T0, T0 + 30 * D, Due(3, T0 + 3 * D)),
    ],
)
def test_next_in_sequence(tags, taken, anchor, now, expected):
    assert next_in_sequence(SEQ, tags, taken, anchor, now) == expected


def test_after_downtime_only_the_next_one_is_due_the_rest_waits_its_delay():
    # The daemon was down for a month: A was sent long ago, B and C are both overdue.
    late = T0 + 30 * D
    assert next_in_sequence(SEQ, ("welcome", "onboarding"), {1: T0}, T0, late) == Due(2, T0 + D)
    # Once B is sent (now), C waits its own delay after B, not after A.
    assert next_in_sequence(SEQ, ("welcome", "onboarding"), {1: T0, 2: late}, T0, late) == Due(
        3, late + 2 * D
    )


@pytest.mark.parametrize(
    "tags, anchor, expected",
    [
        (("welcome",), None, T0),
        (("welcome",), T0 - D, T0 - D),
        ((), None, None),
        ((), T0 - D, T0 - D),
    ],
)
def test_sequence_anchor_is_set_once_when_the_first_tag_arrives(tags, anchor, expected):
    assert sequence_anchor(tags, anchor, T0) == expected


@pytest.mark.parametrize(
    "start, frequency, expected",
    [
        (T0, Frequency.DAILY, T0 + D),
        (T0, Frequency.WEEKLY, T0 + 7 * D),
        (
            datetime(2026, 1, 31, 9, tzinfo=UTC),
            Frequency.MONTHLY,
            datetime(2026, 2, 28, 9, tzinfo=UTC),
        ),
        (
            datetime(2028, 1, 31, 9, tzinfo=UTC),
            Frequency.MONTHLY,
            datetime(2028, 2, 29, 9, tzinfo=UTC),
        ),
        (
            datetime(2026, 12, 15, 9, tzinfo=UTC),
            Frequency.MONTHLY,
            datetime(2027, 1, 15, 9, tzinfo=UTC),
        ),
        (
            datetime(2026, 3, 10, 0, 30, tzinfo=UTC),
            Frequency.MONTHLY,
            datetime(2026, 4, 10, 0, 30, tzinfo=UTC),
        ),
    ],
)
def test_digest_periods_in_utc(start, frequency, expected):
    assert add_period(start, frequency) == expected


@pytest.mark.parametrize(
    "frequency, unsubscribed, last, expected",
    [
        ("daily", False, None, T0 + D),  # a new user: one period after joining
        ("weekly", False, T0 + D, T0 + 8 * D),
        ("disabled", False, None, None),
        ("weekly", True, None, None),
    ],
)
def test_digest_due(frequency, unsubscribed, last, expected):
    assert digest_due(frequency, unsubscribed, last, T0) == expected


def test_digest_holds_exactly_the_newsletter_articles_of_its_window():
    n1 = ArticleInfo(10, (), T0 - H, 0)  # before the window: the last digest had it
    n2 = ArticleInfo(
        11, (), T0, 0
    )  # exactly at the start: the last digest had it (until is inclusive)
    n3 = ArticleInfo(12, (), T0 + H, 0)
    n4 = ArticleInfo(13, (), T0 + D, 0)  # exactly at the end: in
    n5 = ArticleInfo(14, (), T0 + D + H, 0)  # after: next time
    gone = ArticleInfo(15, (), T0 + 2 * H, 0, withdrawn=True)
    seq = ArticleInfo(16, ("welcome",), T0 + 2 * H, 0)
    assert digest_articles([n5, n4, n3, n2, n1, gone, seq], T0, T0 + D) == [12, 13]


def user(**kw):
    base = dict(
        id=1,
        tags=(),
        unsubscribed=False,
        frequency="weekly",
        anchor=None,
        last_digest_at=None,
        joined=T0,
        taken={},
    )
    return SimpleNamespace(**{**base, **kw})


def test_decide_a_pass():
    news = ArticleInfo(20, (), T0 + H, 0)
    articles = [*SEQ, news]
    now = T0 + 7 * D
    plan = decide(
        articles,
        [
            user(id=1, tags=("welcome",)),  # gets the anchor now and A at once
            user(id=2, unsubscribed=True, tags=("welcome",)),  # nothing at all
            user(
                id=3, frequency="disabled", tags=("welcome",), anchor=T0, taken={1: T0}
            ),  # sequence, no digest
            user(id=4, frequency="daily", joined=now),  # joined now: no backlog, nothing due
        ],
        now,
    )
    assert plan.anchors == {1: now}
    assert plan.sequence == [(1, 1), (3, 3)]
    assert plan.digests == [(1, [20])]
    assert plan.digest_windows_closed == [1]
    assert plan.next_due == now + D  # user 4's first digest window


def test_decide_takes_the_store_s_rows_as_they_come():
    """The store hands ``decide`` its own ``ArticleMeta`` rows with list tags (``tuple``
    of a row's tags). Planted bugs: a row's id, tags, publication, delay or withdrawal
    dropped or shifted while converting, rows never converted or always converted."""
    from kuloo_daemon.store.delivery import ArticleMeta, UserState

    rows = [
        ArticleMeta(a.id, list(a.tags), a.published_at, a.delay_seconds, a.withdrawn) for a in SEQ
    ]
    rows.append(ArticleMeta(20, [], T0 + H, 0, False))
    rows.append(ArticleMeta(21, [], T0 + 2 * H, 0, True))  # withdrawn newsletter: never in a digest
    now = T0 + 7 * D
    users = [
        UserState(
            1, ("welcome",), False, "weekly", T0 - 5 * D, None, T0, {1: T0 - 5 * D}
        ),  # C is due, delay 2 days
        UserState(
            2, ("onboarding",), False, "disabled", now - H, None, T0, {}
        ),  # B: 1 day after the anchor
    ]
    plan = decide(rows, users, now)
    assert plan.sequence == [(1, 3)]
    assert plan.digests == [(1, [20])]
    assert plan.next_due == now - H + D  # user 2's B, one day after its anchor
    infos = [
        ArticleInfo(r.id, tuple(r.tags), r.published_at, r.delay_seconds, r.withdrawn) for r in rows
    ]
    again = decide(infos, users, now)
    assert (again.sequence, again.digests, again.next_due) == (
        plan.sequence,
        plan.digests,
        plan.next_due,
    )


def test_next_due_is_the_earliest_later_thing():
    """Planted bugs: a sequence step due later recorded as ``None``; upcoming publications
    ignored, or including withdrawn ones, or one published exactly now; ``min`` without
    a default (a pass with nothing later raised)."""
    now = T0
    waiting = user(id=1, tags=("welcome",), frequency="disabled", anchor=T0, taken={1: T0})
    assert decide(SEQ, [waiting], now).next_due == T0 + 2 * D  # C, two days after A
    done = user(id=2, tags=("welcome",), frequency="disabled", anchor=T0, taken={1: T0, 3: T0})
    withdrawn_soon = ArticleInfo(6, ("welcome",), T0 + D, 0, withdrawn=True)
    assert (
        decide([*SEQ, withdrawn_soon], [done], now).next_due == T0 + 10 * D
    )  # FUTURE's publication
    at_now = ArticleInfo(7, (), now, 0)
    quiet = user(id=3, frequency="disabled")
    assert decide([at_now], [quiet], now).next_due is None
    assert decide(SEQ, [], now).next_due == T0 + 10 * D
    assert decide([], [], now).next_due is None
    # every user counts, not only the last one looked at (planted bug: ``later = mine``)
    assert decide(SEQ, [waiting, quiet], now).next_due == T0 + 2 * D


def test_an_article_published_now_is_not_a_later_reason():
    """Planted bug: ``published_at >= now`` among a user's upcoming publications (the
    article is live now and queued in this pass; counting it again makes the user due
    at once, for nothing, on every pass)."""
    fresh = ArticleInfo(8, ("fresh",), T0, 0)
    plan = decide([fresh], [user(id=1, tags=("fresh",), frequency="disabled", anchor=T0 - D)], T0)
    assert plan.sequence == [(1, 8)]
    assert plan.user_due == {1: None} and plan.next_due is None


def test_a_digest_counts_from_the_last_one_not_from_joining():
    """Planted bug: ``last_digest_at`` not passed (every pass after the first period
    would send a digest again)."""
    news = ArticleInfo(20, (), T0 + 8 * D, 0)
    now = T0 + 9 * D
    recent = user(id=1, frequency="weekly", joined=T0, last_digest_at=T0 + 8 * D - H)
    plan = decide([news], [recent], now)
    assert plan.digests == [] and plan.digest_windows_closed == []
    assert plan.next_due == T0 + 15 * D - H


def test_an_article_published_exactly_now_is_live():
    """Planted bug: ``published_at < now`` (an article due at its publication would wait
    for the next pass)."""
    fresh = ArticleInfo(8, ("fresh",), T0, 0)
    assert fresh.live(T0) and not fresh.live(T0 - timedelta(microseconds=1))
    assert next_in_sequence([fresh], ("fresh",), {}, T0 - D, T0) == Due(8, T0)


def test_no_digest_period_for_disabled():
    """Planted bug: the error's message dropped."""
    with pytest.raises(ValueError) as err:
        add_period(T0, Frequency.DISABLED)
    assert str(err.value) == "no digest period for disabled"


def test_decide_gives_each_user_the_next_time_something_may_become_due():
    """What the store keeps as ``next_due_at``: too late and mail is lost, so every source counts."""
    news = ArticleInfo(20, (), T0 + H, 0)
    now = T0 + 7 * D
    plan = decide(
        [*SEQ, news],
        [
            user(
                id=1, tags=("welcome",)
            ),  # A queued now; FUTURE's publication comes before the next digest
            user(id=2, unsubscribed=True, tags=("welcome",)),  # nothing, until they change
            user(
                id=3, frequency="disabled", tags=("welcome",), anchor=T0, taken={1: now - D}
            ),  # C two days after A
            user(id=4, frequency="daily", joined=now),  # first digest in a day
            user(
                id=5,
                frequency="disabled",
                tags=("welcome",),
                anchor=T0,
                taken={1: T0, 3: T0 + 2 * D},
            ),  # FUTURE
            user(
                id=6, frequency="disabled", tags=("onboarding",), anchor=T0, taken={2: T0}
            ),  # finished: nothing
            user(
                id=7,
                frequency="monthly",
                tags=("welcome",),
                anchor=T0,
                taken={1: None},  # waiting on A
                last_digest_at=now - D,
            ),
        ],
        now,
    )
    assert plan.user_due == {
        1: T0 + 10 * D,
        2: None,
        3: now + D,
        4: now + D,
        5: T0 + 10 * D,
        6: None,
        7: T0 + 10 * D,  # FUTURE's publication (early is harmless: they are read, nothing is due)
    }
    plan = decide(
        [A, B, C],
        [
            user(
                id=7,
                frequency="monthly",
                tags=("welcome",),
                anchor=T0,
                taken={1: None},
                last_digest_at=now - D,
            )
        ],
        now,
    )
    assert plan.user_due == {
        7: datetime(2026, 2, 11, 9, 0, tzinfo=UTC)
    }  # the email on its way counts not


def test_a_digest_window_starts_at_the_last_digest_even_when_an_older_article_exists():
    """Planted bug: the window counted from joining (``user.joined``), ignoring
    ``last_digest_at``: an article already sent in the previous digest comes again."""
    before = ArticleInfo(20, (), T0 + 3 * D, 0)  # in the digest sent at T0 + 7 days
    after = ArticleInfo(21, (), T0 + 10 * D, 0)
    now = T0 + 14 * D
    weekly = user(id=1, frequency="weekly", joined=T0, last_digest_at=T0 + 7 * D)
    plan = decide([before, after], [weekly], now)
    assert plan.digest_windows_closed == [1]
    assert plan.digests == [(1, [21])]
    assert digest_articles([before, after], T0 + 7 * D, now) == [21]
