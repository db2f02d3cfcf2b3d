"""Issue 22 item 2: the PostgreSQL server stopped in the middle of a sync, then started again.

Meanwhile control calls answer ``unavailable`` with "the database is unreachable",
``status`` answers and shows ``store_state``, and the log grows by a bounded number of
lines (the outage once, its end once — no traceback per scheduler tick). When the server
is back, the run the outage interrupted is closed at once (``failed``, reason
``store_unavailable``) and its lease released, never two runs of the channel ``running``,
and the next run finishes the push with no lead lost or duplicated.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter

from kuloo_daemon.control.client import ControlClient, ControlError
from sellsim.seeds import DEMO_TOKEN, default_seed

USERS = 80
OUTAGE = 8.0  # seconds the server is down


def call(d, method, params=None, timeout=60.0):
    with ControlClient(d.socket_path, timeout=timeout) as c:
        return c.call(method, params or {})


def test_postgres_stopped_mid_sync_answers_unavailable_and_closes_the_run_when_back(
    daemon_factory, sellsim, own_pg_server, venv_bin
):
    """Planted bugs: the dispatch's StoreUnavailable branch deleted (calls answer ``internal``);
    the scheduler logging every failed job again (the log grows per tick); the engine's
    ``_close_when_back`` not registered (the run is closed only as a released lease's,
    ``interrupted``)."""
    server = own_pg_server
    db = server.fresh_database()
    sellsim.load_seed(default_seed())
    sellsim.set_options(rate_per_second=10_000, rate_per_hour=10**9)
    d = daemon_factory(
        extra_config=f'[store]\nurl = "{server.url(db)}"\nlease_seconds = 3\n'
        "[sync]\nscheduled = false\n",
        sell=f'base_url = "{sellsim.base_url}"\nrequests_per_second = 15\nmax_attempts = 3\n'
        "timeout_seconds = 5\nverify_timeout_seconds = 30\n",
    )
    d.start()
    d.wait_for("READY=1", timeout=60)
    cid = call(
        d, "channels.create", {"name": "Acme", "plan": "enterprise", "api_token": DEMO_TOKEN}
    )["id"]
    for i in range(USERS):
        call(
            d,
            "users.add",
            {
                "channel": cid,
                "email": f"u{i}@example.net",
                "last_name": f"U{i}",
                "add_to_crm": True,
            },
        )
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = call(d, "sync.run", {"channel": cid}, timeout=120)
        except ControlError as exc:
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    while len(sellsim.records("lead")) < 15 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert t.is_alive(), out
    server.halt()
    halted = time.monotonic()
    try:
        time.sleep(2)
        lines_early = len(d.log().splitlines())
        try:
            call(d, "users.list", {"channel": cid})
            raise AssertionError("users.list answered with the database stopped")
        except ControlError as exc:
            assert exc.code == "unavailable", (exc.code, exc.message)
            assert "the database is unreachable" in exc.message
        # kuloo-ctl says it in one line, with a non-zero exit status.
        ctl = subprocess.run(
            [
                os.path.join(venv_bin, "kuloo-ctl"),
                "--socket",
                d.socket_path,
                "sync",
                "runs",
                "--channel",
                str(cid),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ctl.returncode != 0 and len(ctl.stderr.strip().splitlines()) == 1, ctl
        assert "the database is unreachable" in ctl.stderr, ctl.stderr
        status = call(d, "status")
        assert status["store_state"]["state"] == "unavailable" and status["store_state"]["since"], (
            status
        )
        assert status["channels"] is None
        t.join(30)
        assert not t.is_alive()
        assert out.get("error") is not None and out["error"].code == "unavailable", out
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - halted)))
        lines_late = len(d.log().splitlines())
    finally:
        server.resume()
    grown = lines_late - lines_early
    assert grown <= 12, f"{grown} log lines in {OUTAGE - 2:g} s of outage:\n" + "\n".join(
        d.log().splitlines()[-40:]
    )
    # Back: the first unit of work closes the interrupted run (the scheduler's ticks get there
    # within a second or so), and releases the lease.
    deadline = time.monotonic() + 20
    runs: list = []
    while time.monotonic() < deadline:
        try:
            runs = call(d, "sync.runs", {"channel": cid})["runs"]
        except ControlError:
            runs = []
        if runs and runs[0]["status"] != "running":
            break
        time.sleep(0.2)
    assert runs and runs[0]["status"] == "failed" and runs[0]["reason"] == "store_unavailable", runs
    assert call(d, "status")["store_state"]["state"] == "ok"
    assert server.sql("SELECT count(*) FROM lease WHERE lease_owner <> ''", db) == "0"
    log = d.log()
    assert log.count("the database is unreachable: waiting for it") == 1
    assert log.count("the database answers again") == 1
    assert "Traceback" not in log, [line[:300] for line in log.splitlines() if "Traceback" in line]
    # The next run finishes the push: every user one lead, none twice, never two runs running.
    done = call(d, "sync.run", {"channel": cid}, timeout=120)
    assert done["status"] == "ok", done
    leads = sellsim.records("lead")
    emails = Counter(r["email"] for r in leads)
    assert len(leads) == USERS and max(emails.values()) == 1
    assert (
        server.sql(
            f"SELECT count(*) FROM sync_run WHERE channel_id = {cid} AND status = 'running'", db
        )
        == "0"
    )
    assert d.stop() == 0
