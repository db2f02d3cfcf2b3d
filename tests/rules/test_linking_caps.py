"""Link matching, plan caps and the Sync error texts: pure rules, table tests."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kuloo_daemon.rules import caps, linking, texts
from kuloo_daemon.rules.linking import LinkIndex, RecordRef, UserRef, decide
from kuloo_daemon.vocabulary import Plan

ANN = UserRef(1, "k-ann", "ann@x.test", ("lead", 10))
BOB = UserRef(2, "k-bob", "bob@x.test", None)
INDEX = [ANN, BOB]


@pytest.mark.parametrize(
    "record, action, user, other",
    [
        (RecordRef("lead", 10, "k-ann", "ann@x.test"), linking.MERGE, ANN, None),
        (
            RecordRef("lead", 10, None, "ann@x.test"),
            linking.MERGE,
            ANN,
            None,
        ),  # blank KulooId: put back
        (RecordRef("lead", 10, "k-bob", "ann@x.test"), linking.TAMPERED, ANN, None),
        (RecordRef("lead", 10, "typo", "ann@x.test"), linking.TAMPERED, ANN, None),
        (
            RecordRef("contact", 10, "k-ann", "ann@x.test"),
            linking.DUPLICATE,
            ANN,
            ("lead", 10),
        ),  # kind matters
        (RecordRef("lead", 11, "k-bob", "other@x.test"), linking.LINK, BOB, None),
        (RecordRef("lead", 11, "k-ann", "ann@x.test"), linking.DUPLICATE, ANN, ("lead", 10)),
        (RecordRef("lead", 11, "k-zed", "zed@x.test"), linking.UNKNOWN_KULOO_ID, None, None),
        (RecordRef("lead", 11, None, "bob@x.test"), linking.LINK, BOB, None),
        (RecordRef("lead", 11, None, "ann@x.test"), linking.DUPLICATE, ANN, ("lead", 10)),
        (RecordRef("lead", 11, None, "new@x.test"), linking.IMPORT, None, None),
        (RecordRef("lead", 11, None, None), linking.NO_EMAIL, None, None),
        (
            RecordRef("contact", 12, None, "bob@x.test", is_organization=True),
            linking.IGNORE,
            None,
            None,
        ),
    ],
)
def test_decide(record, action, user, other):
    d = decide(record, LinkIndex.of(INDEX))
    assert (d.action, d.user, d.other) == (action, user, other)
    if action == linking.TAMPERED:
        assert d.expected == "k-ann"


def test_a_duplicate_across_kinds_asks_the_lead_conversions():
    """Planted bugs: a same-kind duplicate looked up (a request per plain duplicate), the
    contact's id asked about instead of the user's lead, a kept lead not asked about."""
    index = LinkIndex.of([ANN, UserRef(3, "k-cy", "cy@x.test", ("contact", 30))])

    def lookup(record):
        return linking.conversion_lookup(record.kind, record.id, decide(record, index))

    assert lookup(RecordRef("contact", 31, None, "ann@x.test")) == 10  # what ann's lead became?
    assert lookup(RecordRef("contact", 31, "k-ann", None)) == 10
    assert (
        lookup(RecordRef("lead", 12, None, "cy@x.test")) == 12
    )  # the lead kept after cy's conversion?
    assert lookup(RecordRef("lead", 11, None, "ann@x.test")) is None  # a plain duplicate
    assert lookup(RecordRef("contact", 30, None, "cy@x.test")) is None  # linked: a merge
    assert lookup(RecordRef("contact", 32, None, "new@x.test")) is None  # an import


def test_a_second_new_record_with_the_same_email_in_one_batch_is_a_duplicate():
    index = LinkIndex.of(INDEX)
    first = RecordRef("lead", 20, None, "new@x.test")
    assert decide(first, index).action == linking.IMPORT
    index.put(UserRef(3, "k-new", "new@x.test", ("lead", 20)))
    d = decide(RecordRef("lead", 21, None, "new@x.test"), index)
    assert (d.action, d.other) == (linking.DUPLICATE, ("lead", 20))
    # unlinking frees the address again
    index.relink(3, None)
    assert decide(RecordRef("lead", 21, None, "new@x.test"), index).action == linking.LINK
    assert index.linked() == 1


@given(st.integers(0, 30), st.integers(0, 30), st.none() | st.integers(0, 40))
def test_cap_selection(linked, wanting, cap):
    links = list(range(linked))
    cands = [f"c{i}" for i in range(wanting)]
    sel = caps.select(cap, links, cands)
    assert list(sel.active) + list(sel.suspended) == links  # oldest keep their place
    assert list(sel.admitted) + list(sel.refused) == cands  # in the order given
    if cap is None:
        assert not sel.refused and not sel.suspended
    else:
        assert len(sel.active) + len(sel.admitted) <= cap
        assert not sel.refused or len(sel.active) + len(sel.admitted) == cap


def test_plan_cap_text_says_the_limit_and_how_to_raise_it():
    text = texts.plan_cap(Plan.FREE)
    assert "Free plan syncs up to 10 leads and contacts" in text
    assert "Starter (500)" in text and "Pro (5,000)" in text and "Enterprise (no limit)" in text
    assert "Pro (5,000)" not in texts.plan_cap(Plan.PRO) and "Enterprise" in texts.plan_cap(
        Plan.PRO
    )


def test_error_texts_are_single_bounded_lines_naming_what_to_do():
    assert texts.duplicate_email("a@x.test", "lead", 10).startswith(
        "Not synced: a@x.test is already synced with lead 10"
    )
    assert 'Restore it to "k-1"' in texts.kuloo_id_changed("k-1", "oops")
    assert "blank" in texts.kuloo_id_changed("k-1", None)
    long = texts.sell_refused("x\n" * 500)
    assert "\n" not in long and len(long) <= texts.MAX_LENGTH


def test_caps_per_plan_and_the_room_left():
    """Planted bugs: ``cap_of`` ignoring its plan; ``room_left`` without a cap giving a
    number, with one giving ``None``, going negative past the cap, or adding the links."""
    assert [caps.cap_of(p) for p in (Plan.FREE, "starter", Plan.PRO, "enterprise")] == [
        10,
        500,
        5000,
        None,
    ]
    assert caps.room_left(None, 7) is None
    assert [caps.room_left(10, n) for n in (0, 3, 9, 10, 12)] == [10, 7, 1, 0, 0]


def test_re_putting_a_user_drops_its_old_keys_only():
    """Planted bugs: the old KulooId, email or link left pointing at the user after it
    changed (``pop(None)``, the ``is old`` test inverted), ``relink`` ignoring the link,
    another user's email mapping removed when a user leaves that address."""
    index = LinkIndex.of(INDEX)
    index.put(UserRef(2, "k-bob2", "bob2@x.test", ("lead", 30)))
    assert decide(RecordRef("lead", 31, "k-bob", None), index).action == linking.UNKNOWN_KULOO_ID
    assert decide(RecordRef("lead", 31, None, "bob@x.test"), index).action == linking.IMPORT
    bob2 = index.by_id[2]
    assert decide(RecordRef("lead", 30, None, None), index) == linking.Decision(linking.MERGE, bob2)
    # Bob moves his link: the old one is free, the new one is his
    moved = index.relink(2, ("contact", 40))
    assert moved.link == ("contact", 40)
    assert decide(RecordRef("lead", 30, None, "new@x.test"), index).action == linking.IMPORT
    assert decide(RecordRef("contact", 40, None, None), index) == linking.Decision(
        linking.MERGE, moved
    )
    # Cy takes Bob's new address; Bob then leaving it must not free it from Cy
    cy = UserRef(3, "k-cy", "bob2@x.test", None)
    index.put(cy)
    index.put(UserRef(2, "k-bob2", "bob3@x.test", ("contact", 40)))
    assert decide(RecordRef("lead", 50, None, "bob2@x.test"), index) == linking.Decision(
        linking.LINK, cy
    )


def test_follow_conversion_never_takes_another_users_contact():
    """The conversion edge cases (docs/sync-rules.md, rule 5). Planted bugs: a contact linked
    to another user followed (two users on one contact, or the other's link taken); the
    user's own contact (a repeated conversion) called another user's."""
    index = LinkIndex.of([ANN, UserRef(3, "k-cy", "cy@x.test", ("contact", 30))])
    d = linking.follow_conversion(ANN, 31, index)
    assert (d.action, d.user, d.other, d.holder) == (linking.FOLLOW, ANN, ("contact", 31), None)
    d = linking.follow_conversion(ANN, 30, index)
    assert (d.action, d.user, d.other) == (linking.CONVERTED_INTO_LINKED, ANN, ("contact", 30))
    assert d.holder.email == "cy@x.test"
    on_contact = index.relink(ANN.id, ("contact", 31))
    assert linking.follow_conversion(on_contact, 31, index).action == linking.FOLLOW
    d = linking.follow_conversion(ANN, None, index)
    assert (d.action, d.user, d.other, d.holder) == (linking.ORGANIZATION_ONLY, ANN, None, None)


@pytest.mark.parametrize(
    "record, asked",
    [
        (
            RecordRef("contact", 40, None, "new@x.test"),
            True,
        ),  # would be imported: a converted lead's?
        (
            RecordRef("contact", 40, None, None),
            True,
        ),  # no email: the Sell user cleared it converting?
        (RecordRef("contact", 40, "typo", "new@x.test"), True),  # an unknown KulooId
        (RecordRef("lead", 40, None, "new@x.test"), False),  # a lead is never what a lead became
        (RecordRef("contact", 40, None, "new@x.test", is_organization=True), False),
        (RecordRef("contact", 10, None, "bob@x.test"), False),  # links to Bob by email
        (
            RecordRef("contact", 41, None, "ann@x.test"),
            False,
        ),  # a duplicate: conversion_lookup's case
    ],
)
def test_a_contact_matching_no_user_may_be_a_converted_lead(record, asked):
    assert linking.may_be_converted(record, decide(record, LinkIndex.of(INDEX))) is asked


def test_the_converted_into_linked_text_names_the_lead_the_contact_and_the_other_user():
    text = texts.converted_into_linked_contact(
        1046, 2001, "bea.long.address.for.a.test@example.com"
    )
    assert (
        "lead 1046" in text
        and "contact 2001" in text
        and "bea.long.address.for.a.test@example.com" in text
    )
    assert text == texts.one_line(text) and not text.endswith("…") and "Add them to Sell" in text
