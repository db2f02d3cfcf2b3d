"""channels.delete (issue 27 item 3): the channel's name typed out deletes it and everything
of it — and nothing of another channel; refused while its sync runs."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from kuloo_daemon.control.client import ControlError
from kuloo_daemon.control.context import Context
from kuloo_daemon.control.methods import channels_delete
from kuloo_daemon.control.protocol import ProtocolError
from kuloo_daemon.delivery.service import Delivery
from kuloo_daemon.services import open_services
from kuloo_daemon.store import channels as channel_store
from kuloo_daemon.store import users as user_store
from kuloo_daemon.sync import engine
from kuloo_daemon.vocabulary import Actor

TABLES = (
    "kuloo_user",
    "user_promo_tag",
    "audit_entry",
    "outbox_message",
    "sync_run",
    "sync_error",
    "article",
    "lease",
)


def rows_of(db, channel: int) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        counts = {
            t: conn.execute(
                f"SELECT count(*) FROM {t} WHERE channel_id = ?", (channel,)
            ).fetchone()[0]  # noqa: S608
            for t in TABLES
        }
        counts["channel"] = conn.execute(
            "SELECT count(*) FROM channel WHERE id = ?", (channel,)
        ).fetchone()[0]
    return counts


def test_the_name_typed_out_deletes_the_channel_and_only_it(daemon):
    with daemon.client() as c:
        one = c.call("channels.create", {"name": "Acme", "sequential_tags": ["welcome"]})["id"]
        two = c.call("channels.create", {"name": "Beta"})["id"]
        for i in range(3):
            c.call(
                "users.add",
                {"channel": one, "email": f"a{i}@example.com", "promo_tags": ["welcome"]},
            )
        c.call("users.add", {"channel": two, "email": "b@example.com"})
        with pytest.raises(ControlError) as wrong:
            c.call("channels.delete", {"id": one, "confirm": "acme"})
        assert wrong.value.code == "invalid_params" and "'Acme'" in str(wrong.value)
        assert c.call("users.list", {"channel": one})["total"] == 3  # nothing went
        result = c.call("channels.delete", {"id": one, "confirm": "Acme"})
        assert result == {"id": one, "name": "Acme", "deleted": True, "users": 3}
        assert [ch["name"] for ch in c.call("channels.list")["channels"]] == ["Beta"]
        assert c.call("users.list", {"channel": two})["total"] == 1
        with pytest.raises(ControlError) as gone:
            c.call("channels.get", {"id": one})
        assert gone.value.code == "not_found"
    db = daemon.root / "state" / "kuloo.sqlite3"
    assert set(rows_of(db, one).values()) == {0}
    assert rows_of(db, two)["kuloo_user"] == 1 and rows_of(db, two)["audit_entry"] >= 1
    assert (
        "channel deleted" in daemon.log()
        and "a0@example.com" not in daemon.log().split("channel deleted")[1]
    )


def test_kuloo_ctl_asks_for_the_name(daemon):
    with daemon.client() as c:
        c.call("channels.create", {"name": "Acme"})
    ctl = [sys.executable, "-m", "kuloo_daemon.control.ctl", "--socket", daemon.socket_path]
    refused = subprocess.run(
        [*ctl, "channel", "delete"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert refused.returncode != 0 and "--confirm NAME" in refused.stderr
    done = subprocess.run(
        [*ctl, "channel", "delete", "--confirm", "Acme"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "channel 1 (Acme)" in done.stdout


async def test_refused_while_its_sync_runs(services_config):
    async with open_services(services_config()) as services:
        now = services.clock.now()
        created = await services.store.run(channel_store.create, {"name": "Acme"}, None, now)
        cid = created.channel.id
        await services.store.run(user_store.add, cid, {"email": "a@example.com"}, Actor.ADMIN, now)
        context = Context(services, Delivery(services), "", lambda: 1)
        lock = engine.channel_lock(services, cid)
        async with lock:  # a sync run of the channel is under way
            with pytest.raises(ProtocolError) as busy:
                await channels_delete(context, {"id": cid, "confirm": "Acme"})
            assert busy.value.code == "conflict"
        assert (await channels_delete(context, {"id": cid, "confirm": "Acme"}))["users"] == 1
