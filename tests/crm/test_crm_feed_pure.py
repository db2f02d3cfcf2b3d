"""The change feed's pure parts at their edges: the stored state, fingerprints, the
polling window's exact boundaries, and what one Sync API item becomes.

Written to kill the mutants `make mutate` found surviving in crm/feed.py's pure
functions; each test names the planted bugs it was checked against.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from kuloo_daemon.crm.feed import (
    ChangeFeed,
    RecordChanged,
    RecordDeleted,
    _fingerprint_ts,
    fingerprint,
    new_state,
    normalize_state,
    poll_advance,
    poll_boundary,
    poll_select,
    sell_time,
    sync_change,
)
from kuloo_daemon.crm.records import Contact, Lead, SyncItem

WM = "2026-03-01T10:00:05Z"


def lead(i: int, ts: str | None, **extra) -> Lead:
    data = {"id": i, **extra}
    if ts is not None:
        data["updated_at"] = ts
    return Lead.from_data(data)


def test_new_state_shape_and_device():
    """Planted bugs: a fixed or missing device UUID, another starting mode, a kind
    missing from the watermarks or the seen lists."""
    assert new_state("dev-1") == {
        "device_uuid": "dev-1",
        "mode": "sync",
        "watermarks": {"lead": None, "contact": None},
        "listed_at": {"lead": None, "contact": None},
        "seen": {"lead": [], "contact": []},
        "sync_checked_at": None,
        "sync_unavailable": None,
    }
    a, b = new_state()["device_uuid"], new_state()["device_uuid"]
    assert a != b and uuid.UUID(a) and uuid.UUID(b)


def test_normalize_state_fills_without_dropping_or_aliasing():
    """Planted bugs: unknown keys dropped, a stored "poll" mode reset, an invalid mode
    kept, a missing kind not filled, the caller's lists shared (mutating the result
    would change the stored state), an empty device UUID kept."""
    stored = {
        "device_uuid": "dev-9",
        "mode": "poll",
        "future_key": {"x": 1},
        "watermarks": {"lead": WM, "deal": "x"},
        "seen": {"contact": ["c1"], "lead": None},
    }
    out = normalize_state(stored)
    assert out["device_uuid"] == "dev-9" and out["mode"] == "poll" and out["future_key"] == {"x": 1}
    assert out["watermarks"] == {"lead": WM, "contact": None}
    assert out["listed_at"] == {"lead": None, "contact": None}  # a state stored before listed_at
    assert out["seen"] == {"lead": [], "contact": ["c1"]}
    out["seen"]["contact"].append("c2")
    out["future_key"]["x"] = 2
    assert stored["seen"]["contact"] == ["c1"] and stored["future_key"] == {"x": 1}
    odd = normalize_state({"device_uuid": "", "mode": "push", "watermarks": None, "seen": None})
    assert uuid.UUID(odd["device_uuid"]) and odd["mode"] == "sync"
    assert odd["watermarks"] == {"lead": None, "contact": None} and odd["seen"] == {
        "lead": [],
        "contact": [],
    }
    assert normalize_state(None)["mode"] == "sync"


def test_normalize_state_completes_listed_at_like_the_watermarks():
    """Planted bug: the completed ``listed_at`` stored under another key (a stored
    ``None`` or a partial one left as it was)."""
    assert normalize_state({"listed_at": None})["listed_at"] == {"lead": None, "contact": None}
    partial = normalize_state({"listed_at": {"lead": WM, "deal": "x"}})
    assert partial["listed_at"] == {"lead": WM, "contact": None}


def test_fingerprint_format_and_content_hash():
    """Planted bugs: keys not sorted (the same record hashes differently by key order),
    another hash length, a placeholder instead of an empty timestamp."""
    a = Lead.from_data({"id": 7, "updated_at": WM, "first_name": "A", "last_name": "B"})
    b = Lead.from_data({"last_name": "B", "first_name": "A", "updated_at": WM, "id": 7})
    assert fingerprint(a) == fingerprint(b)
    assert re.fullmatch(r"7@2026-03-01T10:00:05Z#[0-9a-f]{16}", fingerprint(a))
    assert fingerprint(a) != fingerprint(
        Lead.from_data({"id": 7, "updated_at": WM, "first_name": "Z", "last_name": "B"})
    )
    assert re.fullmatch(r"8@#[0-9a-f]{16}", fingerprint(lead(8, None)))
    assert _fingerprint_ts(fingerprint(a)) == datetime(2026, 3, 1, 10, 0, 5, tzinfo=UTC)
    assert _fingerprint_ts(fingerprint(lead(8, None))) is None
    assert _fingerprint_ts("no-at-sign") is None


def test_poll_select_window_edge():
    """Planted bugs: ``<=`` for ``<`` (a record exactly ``overlap`` before the watermark
    ends the page), the overlap added instead of subtracted, undated records dropped."""
    page = [
        lead(1, "2026-03-01T10:00:04Z"),
        lead(2, None),
        lead(3, "2026-03-01T10:00:03Z"),
        lead(4, "2026-03-01T10:00:02Z"),
    ]
    step = poll_select(page, WM, [], overlap=1.0)
    assert [r.id for r in step.emit] == [1, 2] and step.reached_end is True
    step = poll_select(page, WM, [], overlap=2.0)
    assert [r.id for r in step.emit] == [1, 2, 3] and step.reached_end is True
    step = poll_select(page, None, [fingerprint(page[0])], overlap=1.0)
    assert [r.id for r in step.emit] == [2, 3, 4] and step.reached_end is False


def test_poll_advance_edges():
    """Planted bugs: ``>`` for ``>=`` (a fingerprint exactly at the window's start
    forgotten, so its record is delivered twice), the watermark moving back, seen
    fingerprints dropped when nothing was delivered, duplicates kept."""
    assert poll_advance(None, ["x"], [], overlap=1.0) == (None, ["x"])
    assert poll_advance(None, [], [lead(1, None)], overlap=1.0) == (None, [])
    at_edge = fingerprint(lead(1, "2026-03-01T10:00:04Z"))
    too_old = fingerprint(lead(2, "2026-03-01T10:00:03Z"))
    fresh = lead(3, WM)
    wm, seen = poll_advance(WM, [at_edge, too_old, "junk", at_edge], [fresh], overlap=1.0)
    assert wm == WM and seen == [at_edge, fingerprint(fresh)]
    wm, seen = poll_advance(WM, [at_edge], [], overlap=1.0)
    assert (wm, seen) == (WM, [at_edge])
    wm, _ = poll_advance(WM, [], [lead(4, "2026-03-01T09:00:00Z")], overlap=1.0)
    assert wm == WM


def test_poll_boundary_is_sells_time_at_the_first_page():
    """Planted bugs: the fingerprints kept from the watermark's window when Sell's time is
    known (a burst of changes in one second re-read by every poll), listed_at ignored by
    ``poll_boundary``, an unreadable Date header trusted."""
    listed = datetime(2026, 3, 1, 10, 0, 9, tzinfo=UTC)
    burst = [lead(i, WM) for i in range(1, 4)]
    wm, seen = poll_advance(None, [], burst, overlap=1.0, listed_at=listed)
    assert wm == WM and seen == []  # all four seconds older than the listing: never re-read
    state = {"watermarks": {"lead": wm}, "listed_at": {"lead": "2026-03-01T10:00:09Z"}}
    assert poll_boundary(state, "lead") == "2026-03-01T10:00:09Z"
    assert poll_boundary({"watermarks": {"lead": WM}, "listed_at": {"lead": None}}, "lead") == WM
    assert poll_boundary(normalize_state(None), "contact") is None
    step = poll_select(
        [*burst, lead(9, "2026-03-01T09:00:00Z")], poll_boundary(state, "lead"), seen, overlap=1.0
    )
    assert step.emit == [] and step.reached_end is True  # the first record already ends the pass
    # A record changed in the listing's own second (after the read) or the one before: news.
    late = lead(7, "2026-03-01T10:00:09Z")
    wm, seen = poll_advance(wm, seen, [late], overlap=1.0, listed_at=listed)
    assert wm == "2026-03-01T10:00:09Z" and seen == [fingerprint(late)]
    step = poll_select(
        [lead(8, "2026-03-01T10:00:08Z"), late, *burst], "2026-03-01T10:00:09Z", seen, 1.0
    )
    assert [r.id for r in step.emit] == [8] and step.reached_end is True
    assert sell_time("Sun, 01 Mar 2026 10:00:09 GMT") == listed
    assert sell_time(None) is None and sell_time("yesterday") is None and sell_time("") is None


def test_sync_items_become_changes():
    """Planted bugs: an unknown type acked as a change, a delete's id not parsed, a
    delete without an id accepted, an unreadable record raising instead of ``False``,
    the warning not logged or without its ack key."""

    def item(type_, event, data, ack="k1"):
        return SyncItem(type=type_, event_type=event, ack_key=ack, revision=1, data=data)

    assert sync_change(item("deal", "created", {"id": 1})) is None
    assert sync_change(item("lead", "deleted", {"id": "12"})) == RecordDeleted("lead", 12)
    changed = sync_change(
        item("contact", "updated", {"id": 5, "name": "Org", "is_organization": True})
    )
    assert isinstance(changed, RecordChanged) and changed.kind == "contact" and changed.id == 5
    assert isinstance(changed.record, Contact)
    with capture_logs() as logs:
        assert sync_change(item("lead", "deleted", {"id": None}, ack="k-del")) is False
        assert sync_change(item("lead", "updated", {"id": "x"}, ack="k-bad")) is False
    assert [(e["event"], e["log_level"], e["type"], e["ack_key"]) for e in logs] == [
        ("feed item unreadable", "warning", "lead", "k-del"),
        ("feed item unreadable", "warning", "lead", "k-bad"),
    ]
    assert logs[0]["error"] == "a deleted lead without an integer id"


def test_sync_probe_is_due_after_its_interval():
    """Planted bugs: ``>`` for ``>=`` (a probe exactly one interval later skipped), a
    never-checked state not due."""
    now = datetime(2026, 3, 2, 10, 0, 0, tzinfo=UTC)
    feed = ChangeFeed(None, sync_probe_interval=3600.0, now=lambda: now)  # type: ignore[arg-type]
    assert feed._probe_due({"sync_checked_at": None}) is True
    exact = (now - timedelta(seconds=3600)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert feed._probe_due({"sync_checked_at": exact}) is True
    recent = (now - timedelta(seconds=3599)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert feed._probe_due({"sync_checked_at": recent}) is False
