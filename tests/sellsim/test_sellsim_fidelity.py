"""The second fidelity round (issue 9; docs/sell-api.md): each behaviour under its default and
under every other value of its option."""

from __future__ import annotations

import calendar
import time

import pytest
from sellsim_checks import assert_error

from sellsim.seeds import default_seed

DEV = {"X-Basecrm-Device-UUID": "fidelity-device"}


def _lead(api, **attrs):
    r = api.post("/v2/leads", json={"data": attrs})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def _contact(api, **attrs):
    r = api.post("/v2/contacts", json={"data": attrs})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def _convert(api, lead_id, **extra):
    r = api.post("/v2/lead_conversions", json={"data": {"lead_id": lead_id, **extra}})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def _contacts(api):
    return api.get("/v2/contacts?per_page=100").json()["items"]


def _drain(api, headers=DEV, ack=lambda item: True):
    """One sync session; returns every item served, acking those ``ack`` accepts."""
    r = api.post("/v2/sync/start", headers=headers)
    if r.status_code == 204:
        return []
    sid = r.json()["data"]["id"]
    out = []
    while True:
        r = api.get(f"/v2/sync/{sid}/queues/main", headers=headers)
        if r.status_code == 204:
            return out
        items = r.json()["items"]
        out += items
        keys = [i["meta"]["sync"]["ack_key"] for i in items if ack(i)]
        if keys:
            api.post("/v2/sync/ack", headers=headers, json={"data": {"ack_keys": keys}})


def _revision(sim):
    return sim._call("GET", "/_sim/accounts")[0]["revision"]


# ------------------------------------------------------------------ 1. organization-only leads


def test_organization_only_lead_converts_to_an_organization_only(api, sim):
    before = len(_contacts(api))
    conv = _convert(api, _lead(api, organization_name="Globex", email="info@globex.test")["id"])
    assert conv["individual_id"] is None and conv["organization_id"]
    org = api.get(f"/v2/contacts/{conv['organization_id']}").json()["data"]
    assert org["is_organization"] is True and org["name"] == "Globex"
    assert len(_contacts(api)) == before + 1  # no invented person

    sim.set_options(conversion_org_lead="person")  # the old sellsim behaviour
    conv = _convert(api, _lead(api, organization_name="Initech")["id"])
    person = api.get(f"/v2/contacts/{conv['individual_id']}").json()["data"]
    assert person["is_organization"] is False and person["last_name"] == "Initech"
    assert person["contact_id"] == conv["organization_id"]


def test_a_lead_with_a_last_name_and_an_organization_gives_both(api):
    conv = _convert(api, _lead(api, last_name="Doe", organization_name="Acme")["id"])
    assert conv["individual_id"] and conv["organization_id"]


# ------------------------------------------------------------------ 2. the merge rule


def test_default_merge_rule_is_same_name_and_same_email_or_phone(api, sim):
    assert sim.options()["conversion_merge"] == "name_and_email_or_phone"
    jo = _contact(api, first_name="Jo", last_name="Roe", email="jo@x.test", phone="+1 555-0100")
    # same name, same email (case aside): merged
    assert (
        _convert(api, _lead(api, first_name="jo", last_name="ROE", email="JO@x.test")["id"])[
            "individual_id"
        ]
        == jo["id"]
    )
    # same name, another email but the same phone number written differently: merged
    assert (
        _convert(
            api,
            _lead(api, first_name="Jo", last_name="Roe", email="jo@new.test", mobile="15550100")[
                "id"
            ],
        )["individual_id"]
        == jo["id"]
    )
    # same name only: a new person
    assert (
        _convert(api, _lead(api, first_name="Jo", last_name="Roe", email="other@x.test")["id"])[
            "individual_id"
        ]
        != jo["id"]
    )
    # same email, another name: a new person
    assert (
        _convert(api, _lead(api, first_name="Joanna", last_name="Roe", email="jo@x.test")["id"])[
            "individual_id"
        ]
        != jo["id"]
    )


@pytest.mark.parametrize(
    ("rule", "same_email_other_name", "same_name_no_email"),
    [
        ("name_and_email_or_phone", False, False),
        ("email", True, False),
        ("name", False, True),
        ("any", True, True),
        ("never", False, False),
    ],
)
def test_merge_rule_options(api, sim, rule, same_email_other_name, same_name_no_email):
    sim.set_options(conversion_merge=rule)
    jo = _contact(api, first_name="Jo", last_name="Roe", email="jo@x.test")
    by_email = _convert(api, _lead(api, first_name="Al", last_name="Bo", email="jo@x.test")["id"])
    assert (by_email["individual_id"] == jo["id"]) is same_email_other_name
    by_name = _convert(api, _lead(api, first_name="Jo", last_name="Roe")["id"])
    assert (by_name["individual_id"] == jo["id"]) is same_name_no_email
    both = _convert(api, _lead(api, first_name="Jo", last_name="Roe", email="jo@x.test")["id"])
    assert (both["individual_id"] == jo["id"]) is (rule != "never")


def test_each_account_can_change_its_merge_rule(api, sim):
    jo = _contact(api, first_name="Jo", last_name="Roe", email="jo@x.test")
    sim.set_account(conversion_merge="email")  # this account only; the option stays
    assert sim.options()["conversion_merge"] == "name_and_email_or_phone"
    conv = _convert(api, _lead(api, first_name="Al", last_name="Bo", email="jo@x.test")["id"])
    assert conv["individual_id"] == jo["id"]
    sim.set_account(conversion_merge=None)  # back to the option
    conv = _convert(api, _lead(api, first_name="Al", last_name="Bo", email="jo@x.test")["id"])
    assert conv["individual_id"] != jo["id"]
    with pytest.raises(RuntimeError, match="conversion_merge"):
        sim.set_account(conversion_merge="fuzzy")
    seed = default_seed()
    seed["accounts"][0]["conversion_merge"] = "never"
    sim.load_seed(seed)
    assert sim._call("GET", "/_sim/accounts")[0]["conversion_merge"] == "never"


def test_conversion_owner_id_is_applied(sim):
    seed = default_seed()
    seed["accounts"][0]["users"].append({"name": "Sales", "email": "sales@kuloo-demo.test"})
    sim.load_seed(seed)
    with sim.client() as api:
        me = api.get("/v2/users/self").json()["data"]["id"]
        other = next(u for u in sim._call("GET", "/_sim/accounts")[0]["users"] if u != me)
        lead = _lead(api, last_name="Doe", organization_name="Acme")
        assert lead["owner_id"] == me
        conv = _convert(api, lead["id"], owner_id=other)
        person = api.get(f"/v2/contacts/{conv['individual_id']}").json()["data"]
        org = api.get(f"/v2/contacts/{conv['organization_id']}").json()["data"]
        assert person["owner_id"] == other and org["owner_id"] == other
        plain = _convert(api, _lead(api, last_name="Poe")["id"])  # without: the lead's owner
        assert api.get(f"/v2/contacts/{plain['individual_id']}").json()["data"]["owner_id"] == me
        r = api.post(
            "/v2/lead_conversions",
            json={"data": {"lead_id": _lead(api, last_name="X")["id"], "owner_id": 9}},
        )
        assert_error(r, 422, "incorrect_value", "/owner_id")


# ------------------------------------------------------------------ 3. other types in Sync


def test_sync_queue_carries_deals_tasks_and_notes_until_acked(api, sim):
    lead = _lead(api, last_name="S")
    items = _drain(api, ack=lambda i: i["meta"]["type"] in ("lead", "user"))
    others = {i["meta"]["type"]: i for i in items if i["meta"]["type"] in ("deal", "task", "note")}
    assert set(others) == {"deal", "task", "note"}
    for type_, item in others.items():
        sync = item["meta"]["sync"]
        assert sync["ack_key"] == f"{type_.title()}-{item['data']['id']}-{sync['revision']}"
    assert all(isinstance(i["meta"]["version"], int) and i["meta"]["version"] >= 1 for i in items)
    # Not acked: back in every session, alone.
    again = _drain(api, ack=lambda i: False)
    assert sorted(i["meta"]["type"] for i in again) == ["deal", "note", "task"]
    again = _drain(api)  # acked now
    assert _drain(api) == []
    # A conversion with a deal puts that deal in the queue; versions count an object's changes.
    api.put(f"/v2/leads/{lead['id']}", json={"data": {"first_name": "V2"}})
    conv = _convert(api, lead["id"], create_deal=True)
    items = {(i["meta"]["type"], i["data"]["id"]): i for i in _drain(api)}
    assert ("deal", conv["deal_id"]) in items
    assert items[("lead", lead["id"])]["meta"]["sync"]["event_type"] == "deleted"
    assert items[("lead", lead["id"])]["meta"]["version"] == 3  # created, edited, deleted


def test_sync_other_types_can_be_switched_off(api, sim):
    sim.set_options(sync_other_types=False)
    assert {i["meta"]["type"] for i in _drain(api)} == {"user"}


# ------------------------------------------------------------------ 4. a PUT that changes nothing


def test_noop_put_moves_updated_at_and_the_revision_by_default(api, sim):
    lead = _lead(api, last_name="Same", custom_fields={"Promo": ["welcome"]})
    _drain(api)
    sim.advance_clock(60)
    rev = _revision(sim)
    same = api.put(
        f"/v2/leads/{lead['id']}",
        json={"data": {"last_name": "Same", "custom_fields": {"Promo": ["welcome"]}}},
    )
    assert same.json()["data"]["updated_at"] > lead["updated_at"] and _revision(sim) == rev + 1
    assert [i["data"]["id"] for i in _drain(api)] == [lead["id"]]  # an "update" with no change

    sim.set_options(noop_write_bumps=False)
    sim.advance_clock(60)
    again = api.put(f"/v2/leads/{lead['id']}", json={"data": {"last_name": "Same"}}).json()["data"]
    assert again["updated_at"] == same.json()["data"]["updated_at"] and _revision(sim) == rev + 1
    assert _drain(api) == []


# ------------------------------------------------------------------ 5. unknown filters


def test_unknown_and_unfilterable_custom_field_filters_are_ignored_by_default(api, sim):
    a = _lead(api, last_name="A", custom_fields={"KulooId": "k1", "Subscription": "daily"})
    b = _lead(api, last_name="B", custom_fields={"KulooId": "k2", "Subscription": "weekly"})

    def ids(**params):
        r = api.get("/v2/leads", params=params)
        assert r.status_code == 200, r.text
        return {i["data"]["id"] for i in r.json()["items"]}

    everyone = {a["id"], b["id"]}
    assert ids(**{"custom_fields[KulooId]": "k1"}) == everyone  # not Filterable: dropped
    assert ids(**{"custom_fields[Nope]": "x"}) == everyone  # unknown field: dropped
    assert ids(**{"custom_fields[Last active]": "2025-01-01"}) == everyone  # a date: dropped
    # a filterable field next to an ignored one still filters
    assert ids(**{"custom_fields[Subscription]": "daily", "custom_fields[KulooId]": "k2"}) == {
        a["id"]
    }
    assert_error(api.get("/v2/leads", params={"shoe_size": "9"}), 400, "invalid_param")

    sim.set_options(unknown_filter="reject")
    for name in ("KulooId", "Nope", "Last active"):
        assert_error(
            api.get("/v2/leads", params={f"custom_fields[{name}]": "x"}), 400, "invalid_param"
        )
    assert ids(**{"custom_fields[Subscription]": "daily"}) == {a["id"]}
    with pytest.raises(RuntimeError, match="unknown option 'require_filterable'"):
        sim.set_options(require_filterable=False)  # absorbed by unknown_filter


# ------------------------------------------------------------------ 6. date read format


@pytest.mark.parametrize(
    ("style", "shown"),
    [
        (None, "4/7/2016"),
        ("us", "4/7/2016"),
        ("iso", "2016-04-07"),
        ("datetime", "2016-04-07T00:00:00Z"),
    ],
)
def test_dates_read_back_in_the_configured_format(api, sim, style, shown):
    if style:
        sim.set_options(custom_date_read_format=style)
    created = _lead(
        api,
        last_name="D",
        custom_fields={"Last active": "2016-04-07", "Last login": "2016-04-07T10:00:00Z"},
    )
    assert created["custom_fields"] == {"Last active": shown, "Last login": "2016-04-07T10:00:00Z"}
    lid = created["id"]
    assert api.get(f"/v2/leads/{lid}").json()["data"]["custom_fields"]["Last active"] == shown
    listed = api.get("/v2/leads", params={"ids": lid}).json()["items"][0]["data"]
    assert listed["custom_fields"]["Last active"] == shown
    put = api.put(f"/v2/leads/{lid}", json={"data": {"first_name": "X"}}).json()["data"]
    assert put["custom_fields"]["Last active"] == shown
    synced = next(i for i in _drain(api) if i["data"]["id"] == lid)
    assert synced["data"]["custom_fields"]["Last active"] == shown
    stored = next(r for r in sim.records("lead") if r["id"] == lid)
    assert stored["custom_fields"]["Last active"] == "2016-04-07"  # kept as written
    if shown != "2016-04-07":  # echoing what was read is not a valid write
        r = api.put(f"/v2/leads/{lid}", json={"data": {"custom_fields": {"Last active": shown}}})
        assert_error(r, 422, "incorrect_value", "/custom_fields/Last active")


@pytest.mark.parametrize(
    ("style", "shown"),
    [
        (None, "2016-04-28T06:05:09Z"),
        ("iso", "2016-04-28T06:05:09Z"),
        ("us", "4/28/2016 6:05"),
    ],
)
def test_datetimes_read_back_in_the_configured_format(api, sim, style, shown):
    """``custom_datetime_read_format``: as written, or as the docs' value table shows it."""
    if style:
        sim.set_options(custom_datetime_read_format=style)
    created = _lead(api, last_name="D", custom_fields={"Last login": "2016-04-28T06:05:09Z"})
    assert created["custom_fields"]["Last login"] == shown
    lid = created["id"]
    assert api.get(f"/v2/leads/{lid}").json()["data"]["custom_fields"]["Last login"] == shown
    synced = next(i for i in _drain(api) if i["data"]["id"] == lid)
    assert synced["data"]["custom_fields"]["Last login"] == shown
    stored = next(r for r in sim.records("lead") if r["id"] == lid)
    assert stored["custom_fields"]["Last login"] == "2016-04-28T06:05:09Z"  # kept as written


@pytest.mark.parametrize(
    ("list_style", "multi_style"),
    [
        ("string", "strings"),
        ("object", "strings"),
        ("string", "objects"),
        ("object", "objects"),
    ],
)
def test_choice_values_read_back_as_names_or_objects(api, sim, list_style, multi_style):
    """``custom_list_read_format``/``custom_multiselect_read_format``: a dropdown value as its
    name or as ``{"id", "name"}`` (the choice's id from the definition); a multi-select as a
    list of either. Writes still take names only; the stored form is what was written."""
    sim.set_options(custom_list_read_format=list_style, custom_multiselect_read_format=multi_style)
    defs = {d["data"]["name"]: d["data"] for d in api.get("/v2/lead/custom_fields").json()["items"]}
    ids = {
        name: {c["name"]: c["id"] for c in defs[name]["choices"]}
        for name in ("Subscription", "Promo")
    }
    created = _lead(
        api, last_name="C", custom_fields={"Subscription": "weekly", "Promo": ["upsell", "welcome"]}
    )
    sub = (
        "weekly"
        if list_style == "string"
        else {"id": ids["Subscription"]["weekly"], "name": "weekly"}
    )
    promo = (
        ["upsell", "welcome"]
        if multi_style == "strings"
        else [{"id": ids["Promo"][n], "name": n} for n in ("upsell", "welcome")]
    )
    assert all(isinstance(i, int) for i in ids["Promo"].values())
    lid = created["id"]
    for data in (
        created,
        api.get(f"/v2/leads/{lid}").json()["data"],
        api.get("/v2/leads", params={"ids": lid}).json()["items"][0]["data"],
        next(i for i in _drain(api) if i["data"]["id"] == lid)["data"],
    ):
        assert data["custom_fields"]["Subscription"] == sub
        assert data["custom_fields"]["Promo"] == promo
    stored = next(r for r in sim.records("lead") if r["id"] == lid)["custom_fields"]
    assert stored["Subscription"] == "weekly" and stored["Promo"] == ["upsell", "welcome"]
    if list_style == "object":  # echoing the object read is not a valid write
        r = api.put(f"/v2/leads/{lid}", json={"data": {"custom_fields": {"Subscription": sub}}})
        assert_error(r, 422, "incorrect_value", "/custom_fields/Subscription")
    # filters still match on names
    listed = api.get("/v2/leads", params={"custom_fields[Subscription]": "weekly", "ids": lid})
    assert [i["data"]["id"] for i in listed.json()["items"]] == [lid]


# ------------------------------------------------------------------ 7. create lag


def _lags(api, n):
    out = []
    for i in range(n):
        lead = _lead(api, last_name=f"L{i}")
        created = calendar.timegm(time.strptime(lead["created_at"], "%Y-%m-%dT%H:%M:%SZ"))
        updated = calendar.timegm(time.strptime(lead["updated_at"], "%Y-%m-%dT%H:%M:%SZ"))
        assert updated <= time.time() + 1  # never in the future of the answer
        out.append(updated - created)
    return out


def test_create_lag_is_random_0_to_2_seconds_and_seeded(api, sim):
    assert sim.options()["create_updated_lag"] == "random"
    lags = _lags(api, 12)
    assert set(lags) <= {0, 1, 2} and len(set(lags)) >= 2
    sim.reset()
    sim.set_options(rate_per_second=100_000)
    assert _lags(api, 12) == lags  # the same seed, the same lags
    sim.set_options(create_updated_lag=2)
    assert _lags(api, 3) == [2, 2, 2]
    sim.set_options(create_updated_lag=0)
    assert _lags(api, 2) == [0, 0]
    with pytest.raises(RuntimeError, match="create_updated_lag"):
        sim.set_options(create_updated_lag="often")


# ------------------------------------------------------------------ 8. email filter case


def test_email_filter_is_case_sensitive_by_default(api, sim):
    lead = _lead(api, last_name="M", email="Mixed.Case@Example.com")

    def count(email):
        return api.get("/v2/leads", params={"email": email}).json()["meta"]["count"]

    assert (count("Mixed.Case@Example.com"), count("mixed.case@example.com")) == (1, 0)
    sim.set_options(email_filter="ci")
    assert (count("Mixed.Case@Example.com"), count("mixed.case@example.com")) == (1, 1)
    assert lead["email"] == "Mixed.Case@Example.com"  # stored as written


# ------------------------------------------------------------------ 9. definition key names


@pytest.mark.parametrize("keys", ["current", "both", "legacy"])
def test_custom_field_definition_key_names(api, sim, keys):
    if keys != "current":
        sim.set_options(custom_field_keys=keys)
    for resource in ("lead", "contact"):
        defs = {
            i["data"]["name"]: i["data"]
            for i in api.get(f"/v2/{resource}/custom_fields").json()["items"]
        }
        sub = defs["Subscription"]
        names = ["daily", "weekly", "monthly", "unsubscribed"]
        assert ("choices" in sub) is (keys != "legacy")
        assert ("options" in sub) is (keys != "current")
        for key in ("choices", "options"):
            if key in sub:
                assert [c["name"] for c in sub[key]] == names
        if resource == "contact":
            assert ("for_company" in sub) is (keys != "legacy")
            assert ("for_organisation" in sub) is (keys != "current")
            assert sub.get("for_company", sub.get("for_organisation")) is False
            assert sub["for_contact"] is True


# ------------------------------------------------------------------ 10. the 429 body


@pytest.mark.parametrize("body", [None, "json", "text", "empty"])
def test_429_body(api, sim, body):
    if body:
        sim.set_options(rate_limit_body=body)
    sim.set_faults([{"kind": "429", "count": 1}])
    r = api.get("/v2/users/self")
    if body in (None, "json"):
        assert_error(r, 429, "rate_limit_exceeded")
    elif body == "text":
        assert r.status_code == 429 and r.headers["content-type"].startswith("text/plain")
        assert r.text.strip() == "Too Many Requests"
    else:
        assert r.status_code == 429 and r.content == b""
    assert "retry-after" not in r.headers


# ------------------------------------------------------------------ 11. minor


def test_sort_by_a_custom_field(api, sim):
    sim.load_seed(default_seed())
    sim.set_options(rate_per_second=100_000)
    scores = ["9", "10", "-1.5", None, "100"]
    for i, s in enumerate(scores):
        _lead(api, last_name=f"S{i}", custom_fields={"Score": s} if s else {})

    def order(sort):
        r = api.get("/v2/leads", params={"sort_by": sort})
        assert r.status_code == 200, r.text
        return [i["data"]["custom_fields"].get("Score") for i in r.json()["items"]]

    assert order("custom_fields:Score") == ["-1.5", "9", "10", "100", None]  # numbers by value
    assert order("custom_fields:Score:asc") == ["-1.5", "9", "10", "100", None]
    assert order("custom_fields:Score:desc") == [None, "100", "10", "9", "-1.5"]
    assert_error(
        api.get("/v2/leads", params={"sort_by": "custom_fields:Nope:desc"}), 400, "invalid_param"
    )
    assert_error(api.get("/v2/leads", params={"sort_by": "custom_fields:"}), 400, "invalid_param")


def test_converting_the_same_lead_twice(api, sim):
    lead = _lead(api, first_name="Two", last_name="Times", email="two@x.test")
    first = _convert(api, lead["id"])
    assert_error(
        api.post("/v2/lead_conversions", json={"data": {"lead_id": lead["id"]}}),
        422,
        "incorrect_value",
        "/lead_id",
    )
    sim.set_options(conversion_repeat="duplicate")
    second = _convert(api, lead["id"])  # the lead is gone, the conversion is duplicated
    assert second["id"] != first["id"] and second["lead_id"] == lead["id"]
    assert second["individual_id"] == first["individual_id"]  # Sell's rule merges them
    listed = api.get("/v2/lead_conversions", params={"lead_id": lead["id"]}).json()["items"]
    assert [i["data"]["id"] for i in listed] == [second["id"], first["id"]]
    sim.set_options(conversion_repeat=422)  # `-o conversion_repeat=422` parses as a number
    assert sim.options()["conversion_repeat"] == "422"
    assert_error(
        api.post("/v2/lead_conversions", json={"data": {"lead_id": 424242}}),
        422,
        "incorrect_value",
        "/lead_id",
    )


def test_new_options_survive_a_state_round_trip(tmp_path):
    from sellsim.testing import SellSim

    state = str(tmp_path / "state.json")
    with SellSim(default_seed(), state=state, rate_per_second=1000) as sim, sim.client() as api:
        lead = _lead(api, last_name="Keep", custom_fields={"Last active": "2020-01-02"})
        conv = _convert(api, lead["id"], create_deal=True)
        versions = {
            (i["meta"]["type"], i["data"]["id"]): i["meta"]["version"]
            for i in _drain(api, ack=lambda i: False)
        }
        sim.sim.save_if_dirty()
    with (
        SellSim(state=state, rate_per_second=1000, conversion_repeat="duplicate") as sim,
        sim.client() as api,
    ):
        again = {
            (i["meta"]["type"], i["data"]["id"]): i["meta"]["version"]
            for i in _drain(api, ack=lambda i: False)
        }
        assert again == versions and ("deal", conv["deal_id"]) in again
        assert _convert(api, lead["id"])["lead_id"] == lead["id"]  # the converted lead was kept
