"""kuloo-ctl's friendly subcommands against a real daemon subprocess connected to sellsim."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sellsim.seeds import DEMO_TOKEN

MANUAL = '[clock]\nmode = "manual"\nstart = "2026-01-05T09:00:00Z"\n[sync]\nscheduled = false\n'


def ctl(path: str, *args: str):
    return subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.control.ctl", "--socket", path, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(path: str, *args: str) -> str:
    r = ctl(path, *args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def column(lines: list[str], header: str, row: int) -> str:
    """The cell under ``header`` in data row ``row``: the table is aligned, so header offsets
    hold."""
    start = lines[0].index(header)
    following = [lines[0].index(h) for h in lines[0].split() if lines[0].index(h) > start]
    end = min(following) if following else None
    return lines[row + 1][start:end].strip()


@pytest.fixture
def synced(daemon_factory, sellsim):
    sellsim.set_options(rate_per_second=4000, rate_per_hour=10**9)
    d = daemon_factory(
        MANUAL,
        sell=f'base_url = "{sellsim.base_url}"\nrequests_per_second = 2000\n'
        "max_attempts = 6\ntimeout_seconds = 5\nverify_timeout_seconds = 30\n",
    ).start()
    d.wait_for("READY=1", timeout=30)
    with d.client() as c:
        doc = c.call(
            "channels.create",
            {
                "name": "Acme",
                "plan": "pro",
                "api_token": DEMO_TOKEN,
                "sequential_tags": ["welcome", "onboarding", "upsell"],
            },
        )
        assert doc["connection"]["status"] == "verified", doc["connection"]
    return d


def test_users_and_sync_commands_script_the_common_actions(synced, sellsim):
    sock = synced.socket_path
    out = ok(
        sock,
        "users",
        "add",
        "zoe@example.com",
        "--first-name",
        "Zoe",
        "--last-name",
        "Park",
        "--frequency",
        "daily",
        "--promo",
        "welcome",
        "--promo",
        "upsell",
        "--add-to-crm",
    )
    assert "email         zoe@example.com" in out and "promo tags    welcome,upsell" in out
    ok(sock, "users", "add", "al@example.com", "--channel", "Acme")  # a channel by name

    lines = ok(sock, "users", "list").splitlines()
    assert lines[0].split() == [
        "ID",
        "EMAIL",
        "NAME",
        "SUBSCRIPTION",
        "SOURCE",
        "PROMO",
        "CRM",
        "SYNC",
        "ERROR",
        "BOUNCED",
    ]
    assert len(lines) == 3
    assert column(lines, "EMAIL", 0) == "zoe@example.com" and column(lines, "NAME", 0) == "Zoe Park"
    assert (
        column(lines, "SUBSCRIPTION", 0) == "daily"
        and column(lines, "PROMO", 0) == "welcome,upsell"
    )
    assert (
        column(lines, "EMAIL", 1) == "al@example.com"
        and column(lines, "SUBSCRIPTION", 1) == "weekly"
    )
    r = ctl(sock, "users", "list", "--limit", "1")
    assert len(r.stdout.splitlines()) == 2 and "1 of 2 user(s); next page: --after" in r.stderr
    after = r.stderr.rsplit("--after ", 1)[1].strip()
    assert "al@example.com" in ok(sock, "users", "list", "--after", after)
    raw = json.loads(ok(sock, "users", "list", "--query", "zoe", "--json"))
    assert raw == json.loads(
        ok(sock, "users.list", '{"channel": 1, "query": "zoe", "limit": 50}')
    )  # raw form

    run = ok(sock, "sync", "run").splitlines()
    assert column(run, "STATUS", 0) in ("ok", "partial") and "requests=" in column(run, "COUNTS", 0)
    zoe = json.loads(ok(sock, "users", "show", "zoe@example.com", "--json"))
    assert zoe["crm"]["kind"] == "lead"
    shown = ok(sock, "users", "show", str(zoe["id"]))
    assert f"CRM           lead {zoe['crm']['id']}" in shown and "sync error    -" in shown
    assert shown.splitlines()[-1].startswith(
        "sequence: nothing sent, nothing due"
    )  # no articles here

    sellsim.edit_record("lead", zoe["crm"]["id"], {"custom_fields": {"KulooId": "oops"}})
    ok(sock, "sync", "run")
    errors = ok(sock, "sync", "errors").splitlines()
    assert len(errors) == 2 and column(errors, "EMAIL", 0) == "zoe@example.com"
    assert (
        column(errors, "USER", 0) == str(zoe["id"])
        and column(errors, "CRM", 0) == f"lead {zoe['crm']['id']}"
    )
    assert f'Restore it to "{zoe["kuloo_id"]}"' in errors[1]
    flagged = ok(sock, "users", "list", "--has-sync-error").splitlines()
    assert len(flagged) == 2 and column(flagged, "EMAIL", 0) == "zoe@example.com"
    assert column(flagged, "SYNC ERROR", 0) == "yes"
    assert len(ok(sock, "users", "list", "--no-has-sync-error").splitlines()) == 2
    runs = ok(sock, "sync", "runs", "--limit", "5").splitlines()
    assert len(runs) == 3 and [column(runs, "ID", i) for i in (0, 1)] == ["2", "1"]
    assert json.loads(ok(sock, "sync", "runs", "--json"))["runs"][0]["id"] == 2

    reset = ok(sock, "users", "reset", "zoe@example.com")
    assert reset.startswith(
        f"user {zoe['id']} (zoe@example.com): sequence reset, 0 sent article(s) cleared"
    )
    assert json.loads(ok(sock, "users", "reset", str(zoe["id"]), "--json")) == {
        "id": zoe["id"],
        "cleared": 0,
    }

    verify = ok(sock, "channel", "verify")
    assert "connection  verified" in verify and "token       ****0000" in verify
    outbox = ok(sock, "outbox", "list", "--state", "queued").splitlines()
    assert outbox[0].split()[:3] == ["ID", "STATE", "KIND"]
    assert json.loads(ok(sock, "outbox", "list", "--json")) == {"messages": [], "next_after": None}


def test_errors_are_one_line_with_a_nonzero_status(synced):
    sock = synced.socket_path
    cases = [
        (["users", "show", "999"], 1, "kuloo-ctl: users show failed: "),
        (["users", "show", "nobody"], 1, "is neither a user id nor an email address"),
        (["users", "show", "nobody@example.com"], 1, "(not_found)"),
        (["users", "add", "not-an-email"], 1, "kuloo-ctl: users add failed: "),
        (["users", "list", "--subscription", "hourly"], 2, "invalid choice: 'hourly'"),
        (["users", "list", "--limit", "0"], 2, "'0' is not a positive integer"),
        (["users", "list", "--limit", "501"], 1, "'limit'"),
        (["sync", "errors", "--channel", "Nope"], 1, "(not_found)"),
        (["sync", "frobnicate"], 2, "invalid choice: 'frobnicate'"),
        (["users"], 2, "the following arguments are required: ACTION"),
    ]
    for args, status, fragment in cases:
        r = ctl(sock, *args)
        assert r.returncode == status and fragment in r.stderr, (args, r.returncode, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and r.stdout == "", (
            args,
            r.stderr,
            r.stdout,
        )

    # a second channel: which one must be said; a channel without a token fails verification
    ok(
        sock,
        "channels.create",
        json.dumps({"name": "Beta", "api_token": "not-known-to-sell-".ljust(64, "0")}),
    )
    r = ctl(sock, "users", "list")
    assert (
        r.returncode == 1
        and "2 channels, say which with --channel ID or NAME: 1 (Acme), 2 (Beta)" in r.stderr
    )
    r = ctl(sock, "channel", "verify", "--channel", "Beta")
    assert (
        r.returncode == 1
        and "\nconnection  " in r.stdout
        and "connection  verified" not in r.stdout
    )
    assert "\n  - " in r.stdout  # every problem, one per line
    assert (
        r.stderr.startswith("kuloo-ctl: channel 2's connection is ")
        and len(r.stderr.splitlines()) == 1
    )
    r = ctl(sock, "channel", "verify", "--channel", "3")
    assert r.returncode == 1 and "(not_found)" in r.stderr and len(r.stderr.splitlines()) == 1


@pytest.mark.e2e
def test_friendly_commands_without_a_daemon(short_tmp):
    r = ctl(f"{short_tmp}/none.sock", "users", "list")
    assert r.returncode == 1 and r.stderr.startswith("kuloo-ctl: cannot reach the daemon at ")
    assert len(r.stderr.splitlines()) == 1


@pytest.mark.e2e
@pytest.mark.parametrize(
    "command, method",
    [
        ("users list", "users.list"),
        ("users show", "users.get"),
        ("users add", "users.add"),
        ("users reset", "users.reset_sequence"),
        ("users clear-bounce", "users.update"),
        ("sync run", "sync.run"),
        ("sync runs", "sync.runs"),
        ("sync errors", "sync.errors"),
        ("channel verify", "channels.verify"),
        ("outbox list", "outbox.list"),
    ],
)
def test_every_subcommand_has_useful_help(command, method, short_tmp):
    r = ctl(f"{short_tmp}/none.sock", *command.split(), "--help")
    assert r.returncode == 0 and method in r.stdout and "--json" in r.stdout
    assert "--channel ID|NAME" in r.stdout


@pytest.mark.e2e
def test_top_level_help_lists_the_subcommands(short_tmp):
    r = ctl(f"{short_tmp}/none.sock", "--help")
    assert (
        r.returncode == 0 and "users list|show|add|reset" in r.stdout and "outbox list" in r.stdout
    )
    assert "method" in r.stdout and "params" in r.stdout  # the raw form stays


def test_outbox_list_shows_no_next_attempt_for_a_failed_message():
    """A failed message is never retried: its SENT/NEXT cell is '-', not a stale retry time."""
    from kuloo_daemon.control.ctl_commands import outbox_row, table

    base = {
        "id": 1,
        "kind": "sequence",
        "email": "a@example.com",
        "article": "welcome",
        "articles": [],
        "attempts": 3,
        "sent_at": None,
        "next_attempt_at": "2026-03-01T09:05:00Z",
        "last_error": "550 no such user",
    }
    failed, retrying = (
        outbox_row({**base, "state": "failed"}),
        outbox_row({**base, "state": "queued"}),
    )
    assert failed[6] is None and retrying[6] == "2026-03-01T09:05:00Z"
    assert table(("A",) * 8, [failed])[1].split()[6] == "-"
    sent = outbox_row({**base, "state": "sent", "sent_at": "2026-03-01T09:00:00Z"})
    assert sent[6] == "2026-03-01T09:00:00Z"


def test_sync_runs_table_says_when_a_rate_limited_run_may_retry():
    """``kuloo-ctl sync runs``: a run Sell rate-limited names its retry_at after the reason.
    Planted bug: retry_at dropped from the row."""
    from kuloo_daemon.control.ctl_commands import _run_row

    run = {
        "id": 3,
        "status": "partial",
        "started_at": "2026-12-07T13:20:00Z",
        "finished_at": "2026-12-07T13:20:05Z",
        "counts": {},
        "reason": "rate_limited",
        "error": "429",
        "retry_at": "2026-12-07T14:00:00Z",
    }
    assert _run_row(run)[-1] == "rate_limited (retry at 2026-12-07T14:00:00Z)"
    assert _run_row({**run, "retry_at": None, "reason": "", "error": ""})[-1] == ""
