"""List endpoints: paging, links, per_page limits, sorting, filters, unknown parameters."""

from __future__ import annotations

import pytest
from sellsim_checks import assert_error

from sellsim.seeds import default_seed


@pytest.fixture
def seeded(sim):
    sim.load_seed(default_seed(leads=23, contacts=7))
    return sim


def test_paging_to_the_last_page_by_links(api, seeded):
    url, pages, ids = "/v2/leads?per_page=10", 0, []
    while url:
        body = api.get(url).json()
        pages += 1
        assert body["meta"]["type"] == "collection"
        assert body["meta"]["count"] == len(body["items"])
        ids += [i["data"]["id"] for i in body["items"]]
        url = body["meta"]["links"].get("next_page")
        links = body["meta"]["links"]
        assert "self" in links and "first_page" in links
        assert ("prev_page" in links) == (pages > 1)
    assert pages == 3 and len(ids) == len(set(ids)) == 23


def test_paging_until_an_empty_page(api, seeded):
    counts = []
    for page in range(1, 10):
        body = api.get("/v2/leads", params={"page": page, "per_page": 10}).json()
        counts.append(body["meta"]["count"])
        if not body["items"]:
            break
    assert counts == [10, 10, 3, 0]


@pytest.mark.parametrize("per_page", ["0", "101", "200", "x"])
def test_per_page_limits(api, per_page):
    body = assert_error(api.get("/v2/leads", params={"per_page": per_page}), 400, "invalid_param")
    assert "per_page" in body["errors"][0]["error"]["details"]


def test_per_page_100_and_page_0(api):
    assert api.get("/v2/contacts?per_page=100").status_code == 200
    assert_error(api.get("/v2/contacts?page=0"), 400, "invalid_param")


def test_unknown_query_parameter_is_400(api):
    assert_error(api.get("/v2/leads?updated_since=2024-01-01"), 400, "invalid_param")
    assert_error(api.get("/v2/leads/1?x=1"), 400, "invalid_param")


def test_sort_orders(api, sim, seeded):
    lead = api.get("/v2/leads?per_page=1").json()["items"][0]["data"]
    sim.advance_clock(30)
    api.put(f"/v2/leads/{lead['id']}", json={"data": {"first_name": "Changed"}})
    first = api.get("/v2/leads?sort_by=updated_at:desc&per_page=1").json()["items"][0]["data"]
    assert first["id"] == lead["id"]
    asc = [i["data"]["updated_at"] for i in api.get("/v2/leads?per_page=100").json()["items"]]
    assert asc == sorted(asc) and asc[-1] == first["updated_at"]
    names = [i["data"]["last_name"] for i in api.get("/v2/contacts").json()["items"]]
    assert names == sorted(names, key=str.lower)
    desc = [i["data"]["id"] for i in api.get("/v2/leads?sort_by=id:desc").json()["items"]]
    assert desc == sorted(desc, reverse=True)
    assert_error(api.get("/v2/leads?sort_by=shoe_size"), 400, "invalid_param")


def test_filters(api, seeded):
    items = api.get("/v2/leads?per_page=100").json()["items"]
    a, b = items[0]["data"], items[1]["data"]

    def ids(params):
        r = api.get("/v2/leads", params={**params, "per_page": 100})
        assert r.status_code == 200, r.text
        return {i["data"]["id"] for i in r.json()["items"]}

    assert ids({"ids": f"{a['id']},{b['id']}"}) == {a["id"], b["id"]}
    assert ids({"email": a["email"]}) == {a["id"]}
    assert ids({"email": a["email"].upper()}) == set()  # email_filter="cs" by default
    assert ids({"first_name": a["first_name"], "last_name": a["last_name"]}) >= {a["id"]}
    assert ids({"last_name": a["last_name"].upper()}) == set()
    assert len(ids({"status": "New"})) == 23 and ids({"status": "Working"}) == set()
    weekly = {
        i["data"]["id"] for i in items if i["data"]["custom_fields"].get("Subscription") == "weekly"
    }
    assert weekly and ids({"custom_fields[Subscription]": "weekly"}) == weekly
    upsell = {
        i["data"]["id"] for i in items if "upsell" in i["data"]["custom_fields"].get("Promo", [])
    }
    assert upsell and ids({"custom_fields[Promo]": "upsell"}) == upsell


def test_email_filter_case_is_configurable(api, sim, seeded):
    email = api.get("/v2/leads?per_page=1").json()["items"][0]["data"]["email"]
    assert api.get("/v2/leads", params={"email": email.upper()}).json()["meta"]["count"] == 0
    assert api.get("/v2/leads", params={"email": email}).json()["meta"]["count"] == 1
    sim.set_options(email_filter="ci")
    assert api.get("/v2/leads", params={"email": email.upper()}).json()["meta"]["count"] == 1


def test_custom_field_filter_errors_with_unknown_filter_reject(api, sim):
    sim.set_options(unknown_filter="reject")  # the default, "ignore": test_sellsim_fidelity
    assert_error(api.get("/v2/leads", params={"custom_fields[Nope]": "x"}), 400, "invalid_param")
    assert_error(
        api.get("/v2/leads", params={"custom_fields[Last active]": "2025-01-01"}),
        400,
        "invalid_param",
    )
    # KulooId is not Filterable in the default seed (the setup step never asks for it).
    assert_error(api.get("/v2/leads", params={"custom_fields[KulooId]": "1"}), 400, "invalid_param")
    fid = next(
        i["data"]["id"]
        for i in api.get("/v2/lead/custom_fields").json()["items"]
        if i["data"]["name"] == "KulooId"
    )
    sim.edit_custom_field("lead", fid, {"filterable": True})
    assert api.get("/v2/leads", params={"custom_fields[KulooId]": "1"}).status_code == 200
    # Other unknown parameters stay 400 whatever the option says.
    assert_error(api.get("/v2/leads", params={"custom_field[KulooId]": "1"}), 400, "invalid_param")


def test_empty_result(api):
    body = api.get("/v2/leads", params={"email": "nobody@x.test"}).json()
    assert body == {"items": [], "meta": {"type": "collection", "count": 0, "links": {}}}


def test_collection_envelope_and_no_next_page_on_an_exact_last_page(api, sim):
    sim.load_seed(default_seed(leads=20))
    sim.set_options(rate_per_second=100_000, rate_per_hour=10**9)
    first = api.get("/v2/leads?per_page=10").json()
    assert set(first) == {"items", "meta"} and first["meta"]["type"] == "collection"
    assert all(
        set(i) == {"data", "meta"}
        and set(i["meta"]) == {"type", "version"}
        and i["meta"]["type"] == "lead"
        for i in first["items"]
    )
    assert "next_page" in first["meta"]["links"] and "page=2" in first["meta"]["links"]["next_page"]
    last = api.get(first["meta"]["links"]["next_page"]).json()
    assert last["meta"]["count"] == 10 and "next_page" not in last["meta"]["links"]
    assert "page=1" in last["meta"]["links"]["prev_page"]
    beyond = api.get("/v2/leads?per_page=10&page=3").json()
    assert beyond["items"] == [] and beyond["meta"]["count"] == 0
    assert "next_page" not in beyond["meta"]["links"]


def test_contact_list_paging_filters_and_unknown_params(api, seeded):
    url, ids = "/v2/contacts?per_page=3", []
    while url:
        body = api.get(url).json()
        assert body["meta"]["count"] == len(body["items"]) <= 3
        ids += [i["data"]["id"] for i in body["items"]]
        url = body["meta"]["links"].get("next_page")
    assert len(ids) == len(set(ids)) == 7
    items = api.get("/v2/contacts?per_page=100").json()["items"]
    a = items[0]["data"]

    def got(params):
        r = api.get("/v2/contacts", params={**params, "per_page": 100})
        assert r.status_code == 200, r.text
        return {i["data"]["id"] for i in r.json()["items"]}

    assert got({"ids": str(a["id"])}) == {a["id"]}
    assert got({"email": a["email"]}) == {a["id"]}
    assert a["id"] in got({"first_name": a["first_name"], "last_name": a["last_name"]})
    assert got({"is_organization": "true"}) == set()
    assert len(got({"is_organization": "false"})) == 7
    subs = {
        i["data"]["id"] for i in items if i["data"]["custom_fields"].get("Subscription") == "daily"
    }
    assert got({"custom_fields[Subscription]": "daily"}) == subs
    assert_error(api.get("/v2/contacts?status=New"), 400, "invalid_param")  # a lead-only filter
    assert_error(api.get("/v2/contacts?is_organization=yes"), 400, "invalid_param")
    assert_error(api.get("/v2/contacts?sort_by=updated_at:sideways"), 400, "invalid_param")
    desc = [
        i["data"]["updated_at"]
        for i in api.get("/v2/contacts?sort_by=updated_at:desc").json()["items"]
    ]
    assert desc == sorted(desc, reverse=True)


def test_ids_filter_rejects_non_integers(api):
    assert_error(api.get("/v2/leads?ids=1,x"), 400, "invalid_param")
    assert_error(api.get("/v2/leads?page=1&page=2"), 400, "invalid_param")
