"""The cost of asking many new contacts about their lead conversions, bounded.

A contact matching no user may be what a linked lead became (``linking.may_be_converted``).
A few are asked one by one (``individual_id=C``); many — a bulk import into Sell while leads
are linked — are matched against ONE listing of the conversions, newest first, that stops
once every contact is explained or the listing is older than all of them, within a page cap
past which the rest is asked one by one (``linking.ConversionScan``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kuloo_daemon.rules import linking
from kuloo_daemon.rules.linking import CONVERSION_CLOCK_SLACK, ConversionRef, ConversionScan
from kuloo_daemon.services import open_services
from kuloo_daemon.store import users as user_store
from kuloo_daemon.sync import engine

from .test_conversion_edges import all_users, record, routes, sim, user_doc
from .test_engine_inprocess import fast_config, verified_channel

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LINKED_LEADS = {10, 11, 12}


def conv(cid: int, lead: int | None, contact: int | None, at: datetime | None = T0) -> ConversionRef:
    return ConversionRef(cid, lead, contact, None, at)


def scan_of(**created: datetime | None) -> ConversionScan:
    return ConversionScan.of(((int(k[1:]), at) for k, at in created.items()), LINKED_LEADS.__contains__)


# ----------------------------------------------------------------------------- the pure part


@pytest.mark.parametrize("n, pages", [(1, 3), (3, 3), (200, 3), (201, 4), (1000, 7), (5000, 27)])
def test_the_page_cap_grows_with_the_contacts_in_question(n, pages):
    assert linking.listing_pages(n) == pages


P = T0 - CONVERSION_CLOCK_SLACK  # the oldest a conversion into a contact created at T0 may be


@pytest.mark.parametrize("created, pages, stops, answered, by_id", [
    # explained: a linked lead's conversion into each contact — stop at once
    ({"c1": T0, "c2": T0}, [[conv(9, 10, 1), conv(8, 11, 2)]], [True], {1: [9], 2: [8]}, []),
    # an explained contact keeps collecting while others are open (the oldest conversion's user first, later)
    ({"c1": T0, "c2": T0}, [[conv(9, 10, 1)], [conv(5, 11, 1), conv(4, 12, 2)]], [False, True],
     {1: [9, 5], 2: [4]}, []),
    # an unlinked lead's conversion explains nothing: still open (found, though)
    ({"c1": T0}, [[conv(9, 99, 1)]], [False], None, None),
    # a conversion into no one of them explains nothing
    ({"c1": T0}, [[conv(9, 10, 7)]], [False], None, None),
    # older than any conversion into them can be (created_at minus the slack): settled, none found
    ({"c1": T0, "c2": T0}, [[conv(9, 50, 7, P - timedelta(seconds=1))]], [True], {1: [], 2: []}, []),
    # within the clock slack: not settled yet
    ({"c1": T0}, [[conv(9, 50, 7, P)]], [False], None, None),
    ({"c1": T0}, [[conv(9, 50, 7, P + timedelta(minutes=3))]], [False], None, None),
    # the page's OLDEST conversion counts; each contact is settled by its own created_at
    ({"c1": T0, "c2": T0 - timedelta(hours=1)},
     [[conv(9, 50, 7, T0), conv(8, 50, 7, T0 - timedelta(minutes=10))], [conv(3, 50, 7, T0 - timedelta(hours=2))]],
     [False, True], {1: [], 2: []}, []),
    ({"c1": T0}, [[conv(9, 50, 7, T0), conv(8, 50, 7, None), conv(7, 50, 7, P - timedelta(seconds=1))]], [True],
     {1: []}, []),
    # a page without dates settles nothing
    ({"c1": T0}, [[conv(9, 50, 7, None)]], [False], None, None),
    # the cap (3 pages for 3 contacts): the still open ones are asked by id, the settled one answered
    ({"c1": T0, "c2": T0, "c3": T0 + timedelta(hours=1)},
     [[conv(9, 50, 7, T0 + timedelta(hours=2))], [conv(8, 50, 7, T0 + timedelta(hours=1))],
      [conv(7, 50, 7, T0 + timedelta(minutes=30))]], [False, False, True],
     {3: []}, [1, 2]),
    # a contact without created_at is never scanned: asked by id; the cap counts the scanned ones
    ({"c1": T0, "c2": None}, [[conv(9, 10, 1)]], [True], {1: [9]}, [2]),
])
def test_a_scan_of_the_conversions_newest_first(created, pages, stops, answered, by_id):
    """Planted bugs each row catches: a conversion of an unlinked lead taken as explaining;
    the stop rule without the slack, or by the page's newest conversion; a page without
    dates taken as old; no cap; the cap leaving open contacts unasked."""
    scan = scan_of(**created)
    assert [scan.take(page) for page in pages] == stops
    if answered is None:
        assert scan.open and scan.ask_by_id() == sorted(scan.open)
        return
    assert {c: [x.id for x in found] for c, found in scan.answered().items()} == answered
    assert scan.ask_by_id() == by_id


def test_a_listing_that_ends_answers_for_every_contact():
    scan = scan_of(c1=T0, c2=T0)
    assert scan.take([conv(9, 99, 1)]) is False
    scan.finish()
    assert {c: [x.id for x in f] for c, f in scan.answered().items()} == {1: [9], 2: []}
    assert scan.ask_by_id() == []


def test_without_created_at_nothing_is_listed():
    scan = scan_of(c1=None, c2=None)
    assert not scan.open and scan.ask_by_id() == [1, 2] and scan.answered() == {}
