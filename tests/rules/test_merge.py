"""The three-way merge: a table of the rules, and properties over random values."""

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kuloo_daemon.rules.merge import KULOO, SELL, FieldChange, merge
from kuloo_daemon.rules.values import (
    FIELD_NAMES,
    canonical,
    kuloo_attrs,
    kuloo_values,
    sell_payload,
    sell_values,
)
from kuloo_daemon.vocabulary import FIELD_BY_NAME, Direction

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
MISSING = object()  # no base yet: a first link


def user(**over):
    u = {
        "kuloo_id": "k1",
        "email": "bob@example.com",
        "first_name": "Bob",
        "last_name": "Doe",
        "source": "sync",
        "frequency": "weekly",
        "unsubscribed": False,
        "add_to_crm": False,
        "promo_tags": ["welcome"],
        "last_active": None,
        "sync_error": "",
    }
    u.update(over)
    return u


def agreed(**over):
    values = kuloo_values(user(**over))
    return values, dict(values), dict(values)


CASES = [
    # (field, base, kuloo, sell, kuloo_at, sell_at) -> (side written, value)
    ("Subscription", "weekly", "daily", "weekly", T0, T0, (SELL, "daily")),  # Kuloo changed
    ("Subscription", "weekly", "weekly", "monthly", T0, T0, (KULOO, "monthly")),  # Sell changed
    (
        "Subscription",
        "weekly",
        "unsubscribed",
        "daily",
        T0,
        T0 + timedelta(hours=1),
        (SELL, "unsubscribed"),
    ),
    (
        "Subscription",
        "weekly",
        "daily",
        "unsubscribed",
        T0 + timedelta(hours=1),
        T0,
        (KULOO, "unsubscribed"),
    ),
    (
        "Subscription",
        "weekly",
        "daily",
        "monthly",
        T0,
        T0 + timedelta(seconds=5),
        (KULOO, "monthly"),
    ),  # newer: Sell
    (
        "Subscription",
        "weekly",
        "daily",
        "monthly",
        T0 + timedelta(seconds=5),
        T0,
        (SELL, "daily"),
    ),  # newer: Kuloo
    (
        "Subscription",
        "weekly",
        "daily",
        "monthly",
        T0.replace(microsecond=500),
        T0,
        (SELL, "daily"),
    ),  # same second
    ("Promo", ["a"], ["a", "b"], ["a"], T0, T0, (SELL, ["a", "b"])),
    ("Promo", ["a"], ["a"], None, T0, T0, (KULOO, None)),
    ("Source", "sync", "sync", "admin", T0, T0 + timedelta(days=1), (SELL, "sync")),  # put back
    ("KulooId", "k1", "k1", None, T0, T0, (SELL, "k1")),
    ("Last active", "2026-01-01", "2026-01-02", "2026-01-01", T0, T0, (SELL, "2026-01-02")),
    (
        "Last active",
        "2026-01-01",
        "2026-01-01",
        "2026-01-09",
        T0,
        T0 + timedelta(days=9),
        (SELL, "2026-01-01"),
    ),
    ("email", "a@x.test", "a@x.test", "b@x.test", T0, T0, (KULOO, "b@x.test")),
    ("first_name", "Bob", "Rob", "Bobby", T0, None, (SELL, "Rob")),  # Sell's time unknown: Kuloo
    ("first_name", "Bob", "Rob", "Bobby", None, T0, (KULOO, "Bobby")),  # Kuloo's time unknown: Sell
    ("first_name", "Bob", "Rob", "Bobby", None, None, (SELL, "Rob")),  # both unknown: a tie, Kuloo
    # Sell's time a microsecond after Kuloo's whole second is newer (only a Kuloo time
    # inside Sell's second is truncated, never Sell's)
    ("first_name", "Bob", "Rob", "Bobby", T0, T0 + timedelta(microseconds=1), (KULOO, "Bobby")),
]


@pytest.mark.parametrize("name, b, k, s, k_at, s_at, expected", CASES)
def test_rule_table(name, b, k, s, k_at, s_at, expected):
    result = merge(
        {name: b},
        {name: k},
        {name: s},
        kuloo_changed_at={name: k_at},
        sell_updated_at=s_at,
        fields=(name,),
    )
    side, value = expected
    target = result.to_sell if side == SELL else result.to_kuloo
    assert target == {name: value}
    assert (result.to_kuloo if side == SELL else result.to_sell) == {}
    assert result.base[name] == value
    (change,) = result.changes
    assert (change.field, change.side, change.new, change.kuloo, change.sell) == (
        name,
        side,
        value,
        k,
        s,
    )
    both_changed = b not in (k, s)
    assert change.conflict == (both_changed and FIELD_BY_NAME[name].direction == Direction.BOTH)


@pytest.mark.parametrize(
    "field, read, form",
    [
        ("Last active", "4/27/2016", "2016-04-27"),
        ("Last active", "2016-04-27T00:00:00Z", "2016-04-27"),
        ("Last active", "", None),
        ("Promo", ["upsell", "welcome", "upsell"], ["upsell", "welcome"]),
        ("Promo", ["welcome", "upsell"], ["upsell", "welcome"]),
        ("Promo", None, None),
        ("Promo", [], None),
        ("Subscription", "unsubscribed", "unsubscribed"),
        ("Subscription", "", None),
        ("Subscription", "monthly", "monthly"),
        ("Source", "", None),
        ("Source", "signup", "signup"),
        ("KulooId", "", None),
        ("email", "a@b.test", "a@b.test"),
        ("email", " A@B.test ", "a@b.test"),
        ("first_name", "  Ann ", "Ann"),
    ],
)
def test_canonical_compares_sell_values_by_meaning(field, read, form):
    """The one normaliser of field values (it replaced ``vocabulary.normalise``)."""
    assert canonical(field, read) == form
    assert canonical(field, form) == form  # idempotent


def test_a_record_that_already_says_what_it_should_gets_no_write():
    base, k, s = agreed()
    result = merge(base, k, s)
    assert result.empty and result.changes == ()
    # both sides moved to the same value: agreed, no write, no conflict
    k2 = kuloo_values(user(frequency="daily"))
    result = merge(base, k2, dict(k2))
    assert result.empty and result.base["Subscription"] == "daily"


def test_spelling_is_not_a_change():
    base, k, _ = agreed(promo_tags=["welcome", "upsell"], last_active=date(2016, 4, 27))
    sell = {
        "email": " BOB@Example.com",
        "first_name": "Bob",
        "last_name": "Doe",
        "custom_fields": {
            "Promo": ["upsell", "welcome"],
            "Subscription": "weekly",
            "Source": "sync",
            "Last active": "4/27/2016",
            "KulooId": "k1",
            "Sync error": None,
        },
    }
    assert merge(base, k, sell_values(sell)).empty


def test_first_link_conflicts_go_to_the_newer_side_and_opt_out_wins():
    k = kuloo_values(user(unsubscribed=True))
    s = kuloo_values(user(frequency="daily", first_name="Robert"))
    result = merge({}, k, s, kuloo_changed_at={}, sell_updated_at=T0)
    assert result.to_sell["Subscription"] == "unsubscribed"
    assert result.to_kuloo == {"first_name": "Robert"}
    assert result.conflicts == 2


def test_first_link_fills_blanks_from_the_other_side_without_a_conflict():
    k = kuloo_values(user(last_name="", promo_tags=["welcome"]))
    s = kuloo_values(user(last_name="Doe", promo_tags=[]))
    # even with Kuloo's change the newer one, a blank is not a change
    result = merge(
        {}, k, s, kuloo_changed_at={n: T0 + timedelta(days=1) for n in k}, sell_updated_at=T0
    )
    assert result.to_kuloo == {"last_name": "Doe"} and result.to_sell == {"Promo": ["welcome"]}
    assert result.conflicts == 0


NEWER_KULOO = "conflict: the newer change wins (Kuloo)"
NEWER_SELL = "conflict: the newer change wins (Sell)"


@pytest.mark.parametrize("name, b, k, s, k_at, s_at, expected", [
    # Kuloo -> Sell fields: an edit in Sell put back, a change in Kuloo (or no base) written
    ("Source", "sync", "sync", "admin", T0, T0, FieldChange("Source", SELL, "admin", "sync", "sync", "admin", False,
                                                            "put back: Kuloo keeps this field")),
    ("Source", "sync", "admin", "sync", T0, T0, FieldChange("Source", SELL, "sync", "admin", "admin", "sync", False,
                                                            "written to Sell")),
    ("KulooId", MISSING, "k1", "k9", T0, T0, FieldChange("KulooId", SELL, "k9", "k1", "k1", "k9", False,
                                                         "written to Sell")),
    # first link: a blank filled in from either side
    ("last_name", MISSING, "Doe", None, T0, T0, FieldChange("last_name", SELL, None, "Doe", "Doe", None, False,
                                                            "first link: filled in from Kuloo")),
    ("last_name", MISSING, None, "Doe", T0, T0, FieldChange("last_name", KULOO, None, "Doe", None, "Doe", False,
                                                            "first link: filled in from Sell")),
    # one side moved
    ("first_name", "Bob", "Rob", "Bob", T0, T0, FieldChange("first_name", SELL, "Bob", "Rob", "Rob", "Bob", False,
                                                            "changed in Kuloo")),
    ("first_name", "Bob", "Bob", "Rob", T0, T0, FieldChange("first_name", KULOO, "Bob", "Rob", "Bob", "Rob", False,
                                                            "changed in Sell")),
    # both moved: conflicts, with or without a base
    ("first_name", "Bob", "Rob", "Bo", T0 + timedelta(seconds=1), T0,
     FieldChange("first_name", SELL, "Bo", "Rob", "Rob", "Bo", True, NEWER_KULOO)),
    ("first_name", "Bob", "Rob", "Bo", T0, T0 + timedelta(seconds=1),
     FieldChange("first_name", KULOO, "Rob", "Bo", "Rob", "Bo", True, NEWER_SELL)),
    ("first_name", MISSING, "Rob", "Bo", T0, T0 + timedelta(seconds=1),
     FieldChange("first_name", KULOO, "Rob", "Bo", "Rob", "Bo", True, "first link: " + NEWER_SELL)),
    ("first_name", MISSING, "Rob", "Bo", T0 + timedelta(seconds=1), T0,
     FieldChange("first_name", SELL, "Bo", "Rob", "Rob", "Bo", True, "first link: " + NEWER_KULOO)),
    ("Subscription", "weekly", "daily", "unsubscribed", T0 + timedelta(hours=1), T0,
     FieldChange("Subscription", KULOO, "daily", "unsubscribed", "daily", "unsubscribed", True,
                 "conflict: an opt-out always wins")),
])  # fmt: skip
def test_every_path_audits_the_written_side_s_old_value_and_why(
    name, b, k, s, k_at, s_at, expected
):
    """The audit trail shows, per change, what the written side said before and why.

    Planted bugs: the old value or side dropped (``None``), a note changed or dropped,
    "put back" said of a first write (``known or s != b``) or of a change made in Kuloo
    (``s == b``), the "first link: " prefix on a conflict with a base or missing
    without one."""
    base = {} if b is MISSING else {name: b}
    result = merge(
        base,
        {name: k},
        {name: s},
        kuloo_changed_at={name: k_at},
        sell_updated_at=s_at,
        fields=(name,),
    )
    assert result.changes == (expected,)


def test_payload_carries_only_the_given_fields_and_promo_whole():
    body = sell_payload(
        {"Promo": ["b", "a"], "Sync error": None, "first_name": "Bo"}, promo_order=["b", "a", "z"]
    )
    assert body == {"first_name": "Bo", "custom_fields": {"Promo": ["b", "a"], "Sync error": None}}


# ------------------------------------------------------------------ properties

TAGS = ["welcome", "onboarding", "upsell"]
users = st.fixed_dictionaries(
    {
        "kuloo_id": st.sampled_from(["k1", "k2"]),
        "email": st.sampled_from(["a@x.test", "b@x.test"]),
        "first_name": st.sampled_from(["", "Ann", "Bo"]),
        "last_name": st.sampled_from(["Doe", "Roe"]),
        "source": st.sampled_from(["", "admin", "signup", "sync"]),
        "frequency": st.sampled_from(["daily", "weekly", "monthly", "disabled"]),
        "unsubscribed": st.booleans(),
        "promo_tags": st.lists(st.sampled_from(TAGS), unique=True, max_size=3),
        "last_active": st.none() | st.dates(date(2025, 1, 1), date(2026, 12, 31)),
        "sync_error": st.sampled_from(["", "boom"]),
    }
)
times = st.none() | st.datetimes(datetime(2026, 1, 1), datetime(2026, 1, 2), timezones=st.just(UTC))
field_subsets = st.sets(st.sampled_from(FIELD_NAMES))


def mixed(a, b, keep):
    return {name: (a[name] if name in keep else b[name]) for name in FIELD_NAMES}


@settings(max_examples=400, deadline=None)
@given(
    base_user=users,
    kuloo_user=users,
    sell_user=users,
    kuloo_moved=field_subsets,
    sell_moved=field_subsets,
    base_known=st.booleans(),
    k_at=times,
    s_at=times,
)
def test_merge_obeys_the_rules_and_is_idempotent(
    base_user, kuloo_user, sell_user, kuloo_moved, sell_moved, base_known, k_at, s_at
):
    base_v = kuloo_values(base_user)
    k = mixed(kuloo_values(kuloo_user), base_v, kuloo_moved)
    s = mixed(kuloo_values(sell_user), base_v, sell_moved)
    base = base_v if base_known else {}
    kuloo_at = {name: k_at for name in FIELD_NAMES}
    result = merge(base, k, s, kuloo_changed_at=kuloo_at, sell_updated_at=s_at)

    after_k = {**k, **result.to_kuloo}
    after_s = {**s, **result.to_sell}
    for name in FIELD_NAMES:
        spec = FIELD_BY_NAME[name]
        assert after_k[name] == after_s[name] == result.base[name], name
        if spec.direction == Direction.TO_SELL:
            assert after_k[name] == k[name] and name not in result.to_kuloo  # Kuloo is the truth
        elif k[name] == s[name]:
            assert name not in result.to_kuloo and name not in result.to_sell  # no idle write
        elif base_known and s[name] == base[name]:
            assert after_s[name] == k[name]
        elif base_known and k[name] == base[name]:
            assert after_k[name] == s[name]
        elif name == "Subscription" and "unsubscribed" in (k[name], s[name]):
            assert after_k[name] == "unsubscribed"  # an opt-out always wins
        if name in result.to_kuloo or name in result.to_sell:
            change = next(c for c in result.changes if c.field == name)
            assert (change.kuloo, change.sell) == (k[name], s[name])  # both values audited

    # a second merge right after the first changes nothing
    again = merge(result.base, after_k, after_s, kuloo_changed_at=kuloo_at, sell_updated_at=s_at)
    assert again.empty and again.changes == ()


@settings(max_examples=300, deadline=None)
@given(kuloo_user=users, sell_user=users)
def test_values_taken_from_sell_read_back_the_same_in_kuloo(kuloo_user, sell_user):
    """Applying Sell's values to a Kuloo user makes Kuloo say exactly those values."""
    sell = kuloo_values(sell_user)
    both = [n for n in FIELD_NAMES if FIELD_BY_NAME[n].direction == Direction.BOTH]
    updated = {**kuloo_user, **kuloo_attrs({n: sell[n] for n in both})}
    got = kuloo_values(updated)
    assert {n: got[n] for n in both} == {n: sell[n] for n in both}
    # and a Sell payload of Kuloo's values reads back as Kuloo's values
    values = kuloo_values(kuloo_user)
    body = sell_payload(values, promo_order=kuloo_user["promo_tags"])
    record = {"custom_fields": body.pop("custom_fields"), **body}
    assert sell_values(record) == values
    assert canonical("Promo", body.get("Promo")) is None
