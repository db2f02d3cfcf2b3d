"""A backup taken while a sync runs, restored (issue 27 item 2): the daemon starts on the
copy, its next syncs create no duplicate lead, and delivery waits for the admin."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter

SOAK = bool(os.environ.get("KULOO_SOAK"))
LEADS = 1000 if SOAK else 200


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_backup_taken_during_a_sync_restores_without_a_duplicate_lead(kuloo, sellsim, tmp_path):
    from sellsim.seeds import default_seed

    sellsim.load_seed(default_seed(leads=LEADS))
    kuloo.create_channel()
    for i in range(10):  # unlinked in the copy, pushed after it was taken
        kuloo.call(
            "users.add",
            {"channel": kuloo.channel, "email": f"late{i}@example.net", "add_to_crm": True},
        )
    sellsim.set_options(rate_per_second=400)  # slow enough to take the backup mid-run
    result = {}
    t = threading.Thread(
        target=lambda: result.update(kuloo.call("sync.run", {"channel": kuloo.channel}))
    )
    start = sellsim.counters()["total"]
    t.start()
    while sellsim.counters()["total"] - start < LEADS // 10 and t.is_alive():
        threading.Event().wait(0.01)
    copy = tmp_path / "mid-sync.sqlite3"
    done = cli("backup", "--config", str(kuloo.d.config_path), "--to", str(copy))
    assert done.returncode == 0, done.stderr
    t.join(120)
    assert result["status"] == "ok"
    sellsim.set_options(rate_per_second=4000)
    kuloo.sync()  # the world after the copy: the late users are leads now
    leads_before = len(kuloo.leads())
    kuloo.d.signal(signal.SIGTERM)
    kuloo.d.proc.wait(20)
    done = cli("restore", "--config", str(kuloo.d.config_path), "--from", str(copy))
    assert done.returncode == 0, done.stderr
    assert "Delivery is paused" in done.stdout
    kuloo.d.messages.clear()
    kuloo.d.start()
    kuloo.d.wait_for("READY=1", timeout=30)
    assert kuloo.call("status")["delivery"]["paused"]
    for _ in range(2):
        run = kuloo.sync()
    assert run["status"] == "ok", run
    leads = kuloo.leads()
    assert len(leads) == leads_before == LEADS + 10  # nothing created twice
    assert max(Counter(r["email"] for r in leads).values()) == 1
    users = kuloo.users()
    assert len(users) == LEADS + 10 and all(u["crm"] for u in users)
    assert {(r["custom_fields"] or {}).get("KulooId") for r in leads} == {
        u["kuloo_id"] for u in users
    }
    assert (
        kuloo.call("delivery.run", {})["sent"] == 0
    )  # paused: nothing leaves before the admin says so
    assert kuloo.call("delivery.resume", {}) == {"resumed": True}
    assert kuloo.call("status")["delivery"]["paused"] is None
