"""Control API, seeds, accounts, persistence, the CLI, the ASGI app, the layering rule."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
from sellsim_checks import assert_error

from sellsim import Simulator
from sellsim.seeds import DEMO_TOKEN, default_seed

SECOND = "second-account-token-".ljust(64, "2")


def two_accounts() -> dict:
    seed = default_seed(leads=2)
    seed["accounts"].append(
        {"name": "Other", "token": SECOND, "sync_api": False, "leads": [{"last_name": "Theirs"}]}
    )
    return seed


def test_reset_restores_the_seed_and_clears_everything(sim, api):
    api.post("/v2/leads", json={"data": {"last_name": "A"}})
    sim.set_faults([{"kind": "500"}])
    sim.reset()
    assert sim.faults() == [] and sim.counters()["total"] == 0
    assert sim.options()["rate_per_second"] == 10  # options back to the defaults
    sim.set_options(rate_per_second=1000)
    assert api.get("/v2/leads").json()["meta"]["count"] == 0


def test_accounts_are_isolated(sim, api):
    sim.load_seed(two_accounts())
    with sim.client(token=SECOND) as other:
        theirs = other.get("/v2/leads").json()["items"]
        assert [i["data"]["last_name"] for i in theirs] == ["Theirs"]
        assert_error(api.get(f"/v2/leads/{theirs[0]['data']['id']}"), 404, "not_found")
        assert_error(
            other.post("/v2/sync/start", headers={"X-Basecrm-Device-UUID": "d"}), 403, "forbidden"
        )
        assert other.get("/v2/lead/custom_fields").json()["items"] == []
    assert api.get("/v2/leads").json()["meta"]["count"] == 2


def test_bad_seed_is_rejected_and_keeps_state(sim, api):
    with pytest.raises(RuntimeError, match="400"):
        sim.load_seed({"accounts": [{"token": "short"}]})
    assert api.get("/v2/users/self").status_code == 200


def test_a_seeded_lead_can_arrive_already_converted(sim, api):
    seed = default_seed()
    seed["accounts"][0]["leads"] = [
        {"first_name": "Lena", "last_name": "Fischer", "email": "lena@x.test", "converted": True},
        {"last_name": "Stays"},
    ]
    sim.load_seed(seed)
    assert [i["data"]["last_name"] for i in api.get("/v2/leads").json()["items"]] == ["Stays"]
    conversions = api.get("/v2/lead_conversions").json()["items"]
    assert len(conversions) == 1 and conversions[0]["data"]["deal_id"] is None
    contact = api.get(f"/v2/contacts/{conversions[0]['data']['individual_id']}").json()["data"]
    assert contact["email"] == "lena@x.test" and contact["last_name"] == "Fischer"


def test_ui_edits_are_validated_unless_forced(sim, api):
    lead = sim.create_record("lead", {"last_name": "A"})
    with pytest.raises(RuntimeError, match="422"):
        sim.edit_record("lead", lead["id"], {"custom_fields": {"Subscription": "Weekly"}})
    forced = sim.edit_record(
        "lead", lead["id"], {"custom_fields": {"Subscription": "Weekly"}}, force=True
    )
    assert forced["custom_fields"] == {"Subscription": "Weekly"}
    assert sim.counters()["total"] == 0  # the UI does not spend the token's budget


def test_counters_by_method_and_path(sim, api):
    api.get("/v2/leads")
    api.get("/v2/leads/5")
    api.get("/v2/leads/5")
    c = sim.counters()
    assert c["requests"] == {"GET /v2/leads": 1, "GET /v2/leads/5": 2}
    assert c["routes"] == {"GET /v2/leads": 1, "GET /v2/leads/{id}": 2}
    assert c["statuses"] == {"200": 1, "404": 2}
    sim.reset_counters()
    assert sim.counters()["total"] == 0


def test_the_shared_fixture_starts_fresh(sellsim):
    assert sellsim.options()["rate_per_second"] == 10
    assert sellsim.counters()["total"] == 0 and sellsim.records("lead") == []
    assert sellsim.token == DEMO_TOKEN and sellsim.base_url.startswith("http://127.0.0.1:")


@pytest.mark.e2e
def test_cli_prints_its_url_and_persists_state(tmp_path):
    state = tmp_path / "state.json"
    cmd = [
        sys.executable,
        "-m",
        "sellsim",
        "--port",
        "0",
        "--seed",
        "config/sellsim-demo.json",
        "--state",
        str(state),
    ]
    headers = {"Authorization": f"Bearer {DEMO_TOKEN}", "User-Agent": "t"}

    def run(check):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            assert line.startswith("sellsim listening on http://127.0.0.1:")
            return check(line.split()[-1])
        finally:
            proc.terminate()
            assert proc.wait(10) == 0

    def first(url):
        leads = httpx.get(url + "/v2/leads?per_page=100", headers=headers).json()
        assert (
            leads["meta"]["count"] == 35
        )  # config/sellsim-demo.json: 36 leads, one already converted
        r = httpx.post(url + "/v2/leads", headers=headers, json={"data": {"last_name": "Kept"}})
        return r.json()["data"]["id"]

    lead_id = run(first)
    assert json.loads(state.read_text())["format"] == "sellsim-state-1"
    got = run(lambda url: httpx.get(f"{url}/v2/leads/{lead_id}", headers=headers))
    assert got.status_code == 200 and got.json()["data"]["last_name"] == "Kept"


@pytest.mark.e2e
def test_cli_rejects_a_bad_seed(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"accounts": [{"token": "x"}]}')
    r = subprocess.run(
        [sys.executable, "-m", "sellsim", "--seed", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "64 characters" in r.stderr


async def test_runs_in_process_as_an_asgi_app():
    app = Simulator(default_seed(leads=3))
    headers = {"Authorization": f"Bearer {DEMO_TOKEN}", "User-Agent": "t"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sim", headers=headers
    ) as client:
        r = await client.get("/v2/leads")
        assert r.status_code == 200 and r.json()["meta"]["count"] == 3
        assert r.headers["x-request-id"]
        r = await client.get("/v2/leads", headers={"Authorization": ""})
        assert r.status_code == 401 and r.json()["meta"]["logref"] == r.headers["x-request-id"]


def test_demo_seed_has_the_kuloo_fields_and_varied_values():
    seed = json.load(open("config/sellsim-demo.json"))
    (acc,) = seed["accounts"]
    assert acc["tokens"][0]["token"] == DEMO_TOKEN
    for resource in ("lead", "contact"):
        names = [d["name"] for d in acc["custom_fields"][resource]]
        assert names[:6] == [
            "Promo",
            "Subscription",
            "Source",
            "Last active",
            "KulooId",
            "Sync error",
        ]
        assert {"number", "date", "datetime", "bool"} <= {
            d["type"] for d in acc["custom_fields"][resource]
        }
    records = acc["leads"] + acc["contacts"]
    assert len(records) >= 36
    subs = {r.get("custom_fields", {}).get("Subscription") for r in records}
    promos = {tuple(r.get("custom_fields", {}).get("Promo", [])) for r in records}
    assert {"daily", "weekly", "monthly", "unsubscribed", None} <= subs and len(promos) >= 4
    # The demo's own cases: an organization-only lead, a lead that a conversion merges into
    # an existing contact (same name, email differing in case), deals/tasks/notes for Sync.
    assert any("last_name" not in lead and lead.get("organization_name") for lead in acc["leads"])
    emails = [r["email"] for r in records if r.get("email")]
    assert len({e.casefold() for e in emails}) < len(set(emails))
    assert acc["deals"] and acc["tasks"] and acc["notes"]
    Simulator(seed)  # loads (records are validated like API writes)


def test_sellsim_imports_nothing_from_the_daemon():
    code = (
        "import sys, sellsim.testing, sellsim.__main__, sellsim.pytest_plugin; "
        "print([m for m in sys.modules if m.startswith('kuloo')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _revision(sim):
    return sim._call("GET", "/_sim/accounts")[0]["revision"]


def test_ui_actions_move_updated_at_and_revisions(sim, api):
    lead = sim.create_record("lead", {"last_name": "UI", "email": "ui@x.test"})
    assert api.get(f"/v2/leads/{lead['id']}").json()["data"] == lead
    rev = _revision(sim)
    sim.advance_clock(120)
    edited = sim.edit_record("lead", lead["id"], {"first_name": "Edited"})
    assert edited["updated_at"] > lead["updated_at"] and _revision(sim) == rev + 1
    assert api.get(f"/v2/leads/{lead['id']}").json()["data"]["updated_at"] == edited["updated_at"]
    sim.set_options(noop_write_bumps=False)  # the default (true) is in test_sellsim_fidelity
    unchanged = sim.edit_record("lead", lead["id"], {"first_name": "Edited"})
    assert unchanged["updated_at"] == edited["updated_at"] and _revision(sim) == rev + 1
    other = sim.create_record("lead", {"last_name": "Gone"})
    rev = _revision(sim)
    sim.delete_record("lead", other["id"])
    assert _revision(sim) == rev + 1
    assert_error(api.get(f"/v2/leads/{other['id']}"), 404, "not_found")
    conv = sim.convert_lead(lead["id"])
    assert _revision(sim) > rev + 1
    contact = api.get(f"/v2/contacts/{conv['individual_id']}").json()["data"]
    assert contact["email"] == "ui@x.test" and contact["updated_at"] >= edited["updated_at"]
    with pytest.raises(RuntimeError, match="404"):
        sim.edit_record("lead", lead["id"], {"first_name": "X"})  # converted: gone


def test_bad_control_requests_are_400_and_change_nothing(sim, api):
    before = sim.state()["accounts"]
    seed = dict(default_seed(leads=1), options={"rate_window": "weekly"})
    with pytest.raises(RuntimeError, match="400"):
        sim.load_seed(seed)
    with pytest.raises(RuntimeError, match="400"):
        sim.load_seed({"no_accounts": []})
    assert sim.state()["accounts"] == before
    for path, body in (
        ("/_sim/reset", b"[]"),
        ("/_sim/clock", b'{"advance": "x"}'),
        ("/_sim/options", b'{"nope": 1}'),
        ("/_sim/faults", b"{not json"),
    ):
        r = httpx.post(sim.base_url + path, content=body)
        assert r.status_code == 400 and r.json()["errors"][0]["error"]["code"] == "invalid_control"
        assert r.headers["x-request-id"] == r.json()["meta"]["logref"]


def test_state_file_keeps_records_sync_acks_and_clock_across_restarts(tmp_path):
    from sellsim.testing import SellSim

    state = str(tmp_path / "state.json")
    dev = {"X-Basecrm-Device-UUID": "persisted-device"}
    with SellSim(default_seed(leads=2), state=state) as sim, sim.client() as api:
        lead = api.post("/v2/leads", json={"data": {"last_name": "Kept"}}).json()["data"]
        gone = api.get("/v2/leads").json()["items"][0]["data"]["id"]
        assert api.delete(f"/v2/leads/{gone}").status_code == 204
        sid = api.post("/v2/sync/start", headers=dev).json()["data"]["id"]
        keys = []
        for _ in range(5):
            r = api.get(f"/v2/sync/{sid}/queues/main", headers=dev)
            if r.status_code == 204:
                break
            keys += [i["meta"]["sync"]["ack_key"] for i in r.json()["items"]]
        assert (
            api.post("/v2/sync/ack", headers=dev, json={"data": {"ack_keys": keys}}).status_code
            == 202
        )
        sim.advance_clock(3600)
        sim.set_account(sync_api=True, name="Renamed")
    with SellSim(default_seed(), state=state) as sim, sim.client() as api:  # the seed is ignored
        assert api.get(f"/v2/leads/{lead['id']}").json()["data"] == lead
        assert_error(api.get(f"/v2/leads/{gone}"), 404, "not_found")
        assert api.get("/v2/leads").json()["meta"]["count"] == 2
        assert api.post("/v2/sync/start", headers=dev).status_code == 204  # acks survived
        assert sim.state()["clock_offset"] == 3600
        assert api.get("/v2/accounts/self").json()["data"]["name"] == "Renamed"
        new = api.post("/v2/leads", json={"data": {"last_name": "New"}}).json()["data"]
        assert new["id"] > lead["id"]  # ids are not reused


def test_state_file_is_written_0600_whatever_the_umask(tmp_path):
    """The state file holds every account's Sell token: only its owner may read it, even
    when a crashed save left a world-readable file or the umask is permissive."""
    import os
    import stat

    state = tmp_path / "state.json"
    leftover = tmp_path / "state.json.tmp"  # a crashed save's file, world-readable
    leftover.write_text("left over")
    os.chmod(leftover, 0o644)
    old = os.umask(0)
    try:
        sim = Simulator(default_seed(leads=1), state_path=str(state))
        sim.dirty = True
        sim.save_if_dirty()
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    assert json.loads(state.read_text())["tokens"]  # the tokens are in it


def _cli(*args, timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "sellsim", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.e2e
def test_cli_help():
    r = _cli("--help")
    assert r.returncode == 0
    for flag in ("--host", "--port", "--seed", "--state", "--option"):
        assert flag in r.stdout


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not valid JSON"),
        ("[]", "a seed is a JSON object"),
        ("{}", '"accounts"'),
        ('{"accounts": [], "options": {"nope": 1}}', "unknown option"),
    ],
)
def test_cli_rejects_bad_seed_files(tmp_path, content, message):
    path = tmp_path / "seed.json"
    if content is not None:
        path.write_text(content)
    r = _cli("--seed", str(path))
    assert r.returncode == 2 and message in r.stderr and str(path) in r.stderr
    assert r.stdout == ""


@pytest.mark.e2e
def test_cli_rejects_bad_state_files_and_options(tmp_path):
    state = tmp_path / "state.json"
    for content in ("{not json", '{"format": "other"}', '{"format": "sellsim-state-1"}'):
        state.write_text(content)
        r = _cli("--state", str(state))
        assert r.returncode == 2 and f"state file {state}" in r.stderr, r.stderr
    r = _cli("--state", str(tmp_path / "missing-dir" / "state.json"))
    assert r.returncode == 2 and "cannot write" in r.stderr
    r = _cli("-o", "rate_window=weekly")
    assert r.returncode == 2 and "rate_window" in r.stderr
    r = _cli("-o", "novalue")
    assert r.returncode == 2 and "NAME=VALUE" in r.stderr


def test_a_record_has_a_minimal_web_page_for_the_demo(sellsim):
    """Issue 24 item 10: the demo's ``[sell] web_url`` points at sellsim, whose record pages
    stand in for the Sell web app. Text is escaped. Planted bug: the route removed (404)."""
    lead = sellsim.create_record("lead", {"last_name": "<b>Berg</b>", "email": "d@example.com"})
    contact = sellsim.create_record("contact", {"last_name": "Stone"})
    with httpx.Client(base_url=sellsim.base_url, timeout=10) as http:
        page = http.get(f"/_sim/web/leads/{lead['id']}")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "&lt;b&gt;Berg&lt;/b&gt;" in page.text and "<b>Berg" not in page.text
        assert "d@example.com" in page.text
        assert "Stone" in http.get(f"/_sim/web/crm/contacts/{contact['id']}").text
        assert http.get(f"/_sim/web/crm/contacts/{lead['id']}").status_code == 404
        assert http.get("/_sim/web/leads/nope").status_code == 404
