"""The product's vocabulary: plans as data, status transitions, the §3 field conversions.

Every Sell value of every mapped field, blank included, is converted both ways here.
"""

from datetime import UTC, date, datetime, timedelta

import pytest

from kuloo_daemon import vocabulary as v
from kuloo_daemon.vocabulary import (
    ConnectionStatus,
    Frequency,
    OutboxState,
    Plan,
    Source,
    SyncRunStatus,
)

NOW = datetime(2026, 11, 28, 11, 0, tzinfo=UTC)


def test_the_words_are_the_ones_the_store_and_protocol_use():
    assert [p.value for p in Plan] == ["free", "starter", "pro", "enterprise"]
    assert [f.value for f in Frequency] == ["daily", "weekly", "monthly", "disabled"]
    assert [s.value for s in Source] == ["", "admin", "signup", "sync"]
    assert [k.value for k in v.CrmKind] == ["lead", "contact"]
    assert [s.value for s in ConnectionStatus] == [
        "none",
        "unverified",
        "verified",
        "failed",
        "needs_new_token",
    ]
    assert [s.value for s in OutboxState] == [
        "queued",
        "sending",
        "sent",
        "failed",
        "uncertain",
        "cancelled",
    ]
    assert [s.value for s in SyncRunStatus] == ["running", "ok", "partial", "failed", "skipped"]


@pytest.mark.parametrize(
    "plan, cadence, cap",
    [
        (Plan.FREE, timedelta(days=1), 10),
        (Plan.STARTER, timedelta(hours=1), 500),
        (Plan.PRO, timedelta(minutes=5), 5_000),
        (Plan.ENTERPRISE, timedelta(minutes=5), None),
    ],
)
def test_plans_as_data(plan, cadence, cap):
    assert v.PLANS[plan] == v.PlanRules(cadence, cap)


# ----------------------------------------------------------------------------- transitions


@pytest.mark.parametrize(
    "ok, needs_new_token, unreachable, status",
    [
        (True, False, False, ConnectionStatus.VERIFIED),
        (False, True, False, ConnectionStatus.NEEDS_NEW_TOKEN),
        (False, False, True, ConnectionStatus.UNVERIFIED),
        (False, False, False, ConnectionStatus.FAILED),
    ],
)
def test_connection_after_check(ok, needs_new_token, unreachable, status):
    assert (
        v.connection_after_check(ok=ok, needs_new_token=needs_new_token, unreachable=unreachable)
        == status
    )


def test_connection_after_token_change_and_verified_at():
    assert v.connection_after_token_change(True) == ConnectionStatus.UNVERIFIED
    assert v.connection_after_token_change(False) == ConnectionStatus.NONE
    before = NOW - timedelta(days=1)
    assert v.verified_at_after(ConnectionStatus.VERIFIED, before, NOW) == NOW
    assert v.verified_at_after(ConnectionStatus.UNVERIFIED, before, NOW) == before
    assert v.verified_at_after(ConnectionStatus.FAILED, before, NOW) is None
    assert v.verified_at_after(ConnectionStatus.NEEDS_NEW_TOKEN, before, NOW) is None


ALLOWED_OUTBOX = {
    ("queued", "sending"),
    ("queued", "cancelled"),
    ("sending", "sent"),
    ("sending", "failed"),
    ("sending", "uncertain"),
    ("failed", "queued"),
    ("failed", "cancelled"),
    ("uncertain", "queued"),
    ("uncertain", "cancelled"),
}


@pytest.mark.parametrize("current", list(OutboxState))
@pytest.mark.parametrize("new", list(OutboxState))
def test_outbox_moves(current, new):
    if (current.value, new.value) in ALLOWED_OUTBOX:
        assert v.outbox_move(current, new) == new
    else:
        with pytest.raises(v.InvalidTransition):
            v.outbox_move(current, new)


def test_a_crash_while_sending_makes_a_message_uncertain_never_queued():
    assert v.outbox_after_crash(OutboxState.SENDING) == OutboxState.UNCERTAIN
    for state in OutboxState:
        if state != OutboxState.SENDING:
            assert v.outbox_after_crash(state) == state


@pytest.mark.parametrize("current", list(SyncRunStatus))
@pytest.mark.parametrize("new", list(SyncRunStatus))
def test_sync_run_finishes_once(current, new):
    if current == SyncRunStatus.RUNNING and new != SyncRunStatus.RUNNING:
        assert v.sync_run_finish(current, new) == new
    else:
        with pytest.raises(v.InvalidTransition):
            v.sync_run_finish(current, new)


def test_a_run_left_running_is_failed_as_interrupted():
    assert v.sync_run_after_crash(SyncRunStatus.RUNNING) == (SyncRunStatus.FAILED, "interrupted")
    for status in SyncRunStatus:
        if status != SyncRunStatus.RUNNING:
            assert v.sync_run_after_crash(status) is None


# ----------------------------------------------------------------------------- the field table


def test_the_field_table_is_design_section_3():
    rows = [(f.name, f.sell_type, f.choices, f.direction.value) for f in v.FIELDS]
    assert rows == [
        ("Promo", "multi_select_list", None, "both"),
        ("Subscription", "list", ("daily", "weekly", "monthly", "unsubscribed"), "both"),
        ("Source", "list", ("admin", "signup", "sync"), "kuloo_to_sell"),
        ("Last active", "date", None, "kuloo_to_sell"),
        ("KulooId", "string", None, "kuloo_to_sell"),
        ("Sync error", "string", None, "kuloo_to_sell"),
        ("email", "standard", None, "both"),
        ("first_name", "standard", None, "both"),
        ("last_name", "standard", None, "both"),
    ]
    assert [f.name for f in v.CUSTOM_FIELDS] == [
        "Promo",
        "Subscription",
        "Source",
        "Last active",
        "KulooId",
        "Sync error",
    ]
    promo = v.FIELD_BY_NAME["Promo"]
    assert promo.choices_for(["welcome", "", "upsell", "welcome"]) == ("welcome", "upsell")
    assert v.FIELD_BY_NAME["Source"].choices_for(["ignored"]) == ("admin", "signup", "sync")


def user(**kw):
    base = {
        "frequency": "weekly",
        "unsubscribed": False,
        "promo_tags": [],
        "source": "",
        "last_active": None,
        "kuloo_id": "K1",
        "sync_error": "",
        "email": "a@b.test",
        "first_name": "",
        "last_name": "",
    }
    return {**base, **kw}


# (field, user attributes) -> Sell value
TO_SELL = [
    ("Subscription", {"frequency": "daily"}, "daily"),
    ("Subscription", {"frequency": "weekly"}, "weekly"),
    ("Subscription", {"frequency": "monthly"}, "monthly"),
    ("Subscription", {"frequency": "disabled"}, None),
    ("Subscription", {"frequency": "daily", "unsubscribed": True}, "unsubscribed"),
    ("Subscription", {"frequency": "disabled", "unsubscribed": True}, "unsubscribed"),
    ("Promo", {"promo_tags": []}, []),
    ("Promo", {"promo_tags": ["welcome"]}, ["welcome"]),
    ("Promo", {"promo_tags": ["upsell", "welcome", "upsell"]}, ["upsell", "welcome"]),
    ("Source", {"source": ""}, None),
    ("Source", {"source": "admin"}, "admin"),
    ("Source", {"source": "signup"}, "signup"),
    ("Source", {"source": "sync"}, "sync"),
    ("Last active", {"last_active": None}, None),
    ("Last active", {"last_active": datetime(2026, 11, 28, 23, 30, tzinfo=UTC)}, "2026-11-28"),
    # a late evening in New York is already the next day in UTC
    (
        "Last active",
        {"last_active": datetime.fromisoformat("2026-11-28T22:30:00-05:00")},
        "2026-11-29",
    ),
    ("Last active", {"last_active": date(2026, 1, 2)}, "2026-01-02"),
    ("KulooId", {"kuloo_id": "K-42"}, "K-42"),
    ("Sync error", {"sync_error": ""}, None),
    ("Sync error", {"sync_error": "over the plan's cap"}, "over the plan's cap"),
    ("email", {"email": "x@y.test"}, "x@y.test"),
    ("first_name", {"first_name": ""}, None),
    ("last_name", {"last_name": "Ng"}, "Ng"),
]


@pytest.mark.parametrize("field, attrs, sell", TO_SELL)
def test_to_sell(field, attrs, sell):
    assert v.to_sell(field, user(**attrs)) == sell


# Sell value -> the user attributes it determines
TO_KULOO = [
    ("Subscription", "daily", {"frequency": "daily", "unsubscribed": False}),
    ("Subscription", "weekly", {"frequency": "weekly", "unsubscribed": False}),
    ("Subscription", "monthly", {"frequency": "monthly", "unsubscribed": False}),
    ("Subscription", "unsubscribed", {"unsubscribed": True}),  # keeps the user's frequency
    ("Subscription", None, {"frequency": "disabled", "unsubscribed": False}),
    ("Subscription", "", {"frequency": "disabled", "unsubscribed": False}),
    ("Promo", None, {"promo_tags": []}),
    ("Promo", [], {"promo_tags": []}),
    ("Promo", ["welcome", "upsell"], {"promo_tags": ["welcome", "upsell"]}),
    ("Promo", ["welcome", "welcome"], {"promo_tags": ["welcome"]}),
    ("Source", None, {"source": ""}),
    ("Source", "", {"source": ""}),
    ("Source", "admin", {"source": "admin"}),
    ("Source", "signup", {"source": "signup"}),
    ("Source", "sync", {"source": "sync"}),
    ("Last active", None, {"last_active": None}),
    ("Last active", "", {"last_active": None}),
    ("Last active", "2026-11-28", {"last_active": date(2026, 11, 28)}),
    ("Last active", "4/27/2016", {"last_active": date(2016, 4, 27)}),
    ("Last active", "2026-11-28T00:00:00Z", {"last_active": date(2026, 11, 28)}),
    ("KulooId", "K-42", {"kuloo_id": "K-42"}),
    ("KulooId", None, {"kuloo_id": ""}),
    ("Sync error", None, {"sync_error": ""}),
    ("Sync error", "over the cap", {"sync_error": "over the cap"}),
    ("email", "x@y.test", {"email": "x@y.test"}),
    ("first_name", None, {"first_name": ""}),
    ("last_name", "Ng", {"last_name": "Ng"}),
]


@pytest.mark.parametrize("field, sell, attrs", TO_KULOO)
def test_to_kuloo(field, sell, attrs):
    assert v.to_kuloo(field, sell) == attrs


@pytest.mark.parametrize(
    "field, sell",
    [
        ("Subscription", "Daily"),  # case matters
        ("Subscription", "disabled"),  # not a Sell choice: blank says it
        ("Subscription", "never"),
        ("Source", "app"),
        ("Source", "Admin"),
        ("Promo", "welcome"),  # a multi-select is a list
        ("Promo", [1]),
        ("Last active", "yesterday"),
    ],
)
def test_to_kuloo_refuses_values_outside_the_table(field, sell):
    with pytest.raises(ValueError):
        v.to_kuloo(field, sell)


@pytest.mark.parametrize("frequency", list(Frequency))
@pytest.mark.parametrize("unsubscribed", [False, True])
def test_subscription_round_trips(frequency, unsubscribed):
    u = user(frequency=frequency, unsubscribed=unsubscribed)
    back = {**u, **v.to_kuloo("Subscription", v.to_sell("Subscription", u))}
    assert (back["frequency"], back["unsubscribed"]) == (frequency, unsubscribed)


def test_every_choice_of_every_choice_field_converts_both_ways():
    for f in v.CUSTOM_FIELDS:
        for choice in f.choices or ():
            attrs = v.to_kuloo(f.name, choice)
            assert v.to_sell(f.name, user(**attrs)) == choice, (f.name, choice)
