"""users.erase (issue 27 item 3; docs/operations.md): the daemon as a subprocess against
sellsim over loopback, a real SQLite file.

An erased user is gone with their personal data (also from the database file's bytes), a
tombstone stands, their Sell lead is left alone but never imported again while it stands
(the "erased" Sync error instead); adding the user again ends it and links the lead.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from kuloo_daemon.control.client import ControlError

from .conftest import FAST, TAGS, Kuloo

EMAIL = "Erin.Erased@example.com"
KEY = "a-long-random-erasure-key-for-the-tests"


@pytest.fixture
def erasing(daemon_factory, sellsim):
    """``erasing(key=True)``: a daemon on a manual clock against sellsim, with (or without)
    the erasure-key credential."""
    sellsim.set_options(rate_per_second=FAST * 2, rate_per_hour=10**9)

    def make(key: bool = True) -> Kuloo:
        d = daemon_factory(
            extra_config='[clock]\nmode = "manual"\n[sync]\nscheduled = false\n'
            '[credentials]\ndirectory = "creds"\n',
            sell=f'base_url = "{sellsim.base_url}"\nrequests_per_second = {FAST}\nmax_attempts = 6\n'
            "timeout_seconds = 5\nverify_timeout_seconds = 30\n",
        )
        creds = d.root / "creds"
        creds.mkdir(exist_ok=True)
        (creds / "link-signing-key").write_text("k" * 40 + "\n")
        if key:
            (creds / "erasure-key").write_text(KEY + "\n")
        d.start()
        d.wait_for("READY=1")
        return Kuloo(d, sellsim)

    return make


def db_path(kuloo: Kuloo):
    return kuloo.d.root / "state" / "kuloo.sqlite3"


def checkpointed_bytes(kuloo: Kuloo) -> bytes:
    """The database file's bytes after the WAL is checkpointed into it (and the WAL's)."""
    path = db_path(kuloo)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def query(kuloo: Kuloo, sql: str, *args):
    with sqlite3.connect(db_path(kuloo)) as conn:
        return conn.execute(sql, args).fetchall()


def test_erasure_leaves_a_tombstone_and_the_lead_is_not_imported_again(erasing, sellsim):
    kuloo = erasing()
    kuloo.create_channel()
    other = kuloo.call("users.add", {"channel": kuloo.channel, "email": "keep@example.com"})
    lead = sellsim.create_record(
        "lead",
        {
            "last_name": "Erased",
            "first_name": "Erin",
            "email": EMAIL,
            "custom_fields": {"Promo": [TAGS[0]]},
        },
    )
    kuloo.sync()
    erin = kuloo.user(EMAIL)
    assert erin["crm"] == {"kind": "lead", "id": lead["id"]}
    kuloo.call("users.update", {"id": erin["id"], "first_name": "Erina"})  # audit values to null
    assert any(EMAIL.encode() in b for b in [checkpointed_bytes(kuloo)])

    with pytest.raises(ControlError) as wrong:
        kuloo.call("users.erase", {"id": erin["id"], "confirm": "keep@example.com"})
    assert wrong.value.code == "invalid_params" and "email" in str(wrong.value)
    assert kuloo.user(EMAIL)["id"] == erin["id"]  # nothing went

    done = kuloo.call("users.erase", {"id": erin["id"], "confirm": EMAIL.lower()})
    assert done["id"] == erin["id"] and done["erased"] is True
    with pytest.raises(ControlError) as gone:
        kuloo.call("users.get", {"id": erin["id"]})
    assert gone.value.code == "not_found"
    assert kuloo.user("keep@example.com")["id"] == other["id"]
    # The tombstone: no personal data, the former id and KulooId, the record, a keyed hash.
    stones = query(
        kuloo, "SELECT former_id, kuloo_id, email_hash, crm_kind, crm_id FROM erased_user"
    )
    assert [s[:2] + s[3:] for s in stones] == [(erin["id"], erin["kuloo_id"], "lead", lead["id"])]
    assert len(stones[0][2]) == 64 and "erin" not in stones[0][2]
    # Their audit entries keep the fact, not the values; one channel line names no one.
    audit = query(
        kuloo,
        "SELECT user_id, old, new, note FROM audit_entry WHERE channel_id = ? AND user_id IS NULL",
        kuloo.channel,
    )
    assert ("user " + str(erin["id"]) + " erased") in [a[3] for a in audit]
    assert all(a[1] is None and a[2] is None for a in audit)
    assert query(kuloo, "SELECT count(*) FROM kuloo_user WHERE email_key = ?", EMAIL.lower()) == [
        (0,)
    ]
    # The bytes are gone from the file (secure_delete), the WAL checkpointed into it.
    raw = checkpointed_bytes(kuloo).lower()
    assert EMAIL.lower().encode() not in raw and b"erina" not in raw
    assert EMAIL.lower() not in kuloo.d.log().lower()

    # The next sync: the lead is not imported again, and says why in Sell.
    run = kuloo.sync()
    assert run["counts"].get("users_created", 0) == 0
    assert [u["email"] for u in kuloo.users()] == ["keep@example.com"]
    text = kuloo.lead(lead["id"])["custom_fields"]["Sync error"]
    assert (
        text.startswith("erased in Kuloo on ")
        and "delete it in Sell, or add the user again" in text
    )
    assert [(e["crm"], e["code"], e["email"]) for e in kuloo.errors()] == [
        ({"kind": "lead", "id": lead["id"]}, "erased", "")
    ]
    assert EMAIL.lower().encode() not in checkpointed_bytes(kuloo).lower()
    kuloo.sync()  # and again: still not imported
    assert [u["email"] for u in kuloo.users()] == ["keep@example.com"]

    # Adding the user again ends the tombstone; the next sync links the lead to them.
    again = kuloo.call("users.add", {"channel": kuloo.channel, "email": EMAIL})
    assert again["kuloo_id"] == erin["kuloo_id"]  # the KulooId the lead still carries
    assert query(kuloo, "SELECT count(*) FROM erased_user") == [(0,)]
    kuloo.sync()
    assert kuloo.user(EMAIL)["crm"] == {"kind": "lead", "id": lead["id"]}
    assert not kuloo.lead(lead["id"])["custom_fields"].get("Sync error")
    assert kuloo.errors() == []


def test_without_the_erasure_key_users_erase_says_what_to_do(erasing):
    kuloo = erasing(key=False)
    kuloo.create_channel()
    user = kuloo.call("users.add", {"channel": kuloo.channel, "email": EMAIL})
    with pytest.raises(ControlError) as missing:
        kuloo.call("users.erase", {"id": user["id"], "confirm": EMAIL})
    assert missing.value.code == "unavailable"
    assert "erasure-key" in str(missing.value) and "[credentials] erasure_key" in str(missing.value)
    assert kuloo.user(EMAIL)["id"] == user["id"]


def test_kuloo_ctl_users_erase_asks_for_the_email_again(erasing):
    kuloo = erasing()
    kuloo.create_channel()
    kuloo.call("users.add", {"channel": kuloo.channel, "email": EMAIL})
    ctl = [sys.executable, "-m", "kuloo_daemon.control.ctl", "--socket", kuloo.d.socket_path]
    typed_wrong = subprocess.run(
        [*ctl, "users", "erase", EMAIL, "--confirm", "someone@example.com"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert typed_wrong.returncode != 0 and "email" in typed_wrong.stderr
    assert kuloo.user(EMAIL)["email"] == EMAIL
    no_tty = subprocess.run(
        [*ctl, "users", "erase", EMAIL],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert no_tty.returncode != 0 and "--confirm EMAIL" in no_tty.stderr
    done = subprocess.run(
        [*ctl, "users", "erase", EMAIL, "--channel", str(kuloo.channel), "--confirm", EMAIL],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "erased" in done.stdout
    assert kuloo.users() == []


def test_a_new_sell_record_with_an_erased_address_is_not_imported(erasing, sellsim):
    kuloo = erasing()
    kuloo.create_channel()
    user = kuloo.call("users.add", {"channel": kuloo.channel, "email": EMAIL})  # never in Sell
    kuloo.call("users.erase", {"id": user["id"], "confirm": EMAIL})
    lead = sellsim.create_record(
        "lead", {"last_name": "Again", "email": "  erin.erased@EXAMPLE.com"}
    )
    run = kuloo.sync()
    assert run["counts"].get("users_created", 0) == 0 and kuloo.users() == []
    assert kuloo.lead(lead["id"])["custom_fields"]["Sync error"].startswith("erased in Kuloo on ")
    assert "KulooId" not in kuloo.lead(lead["id"])["custom_fields"]
