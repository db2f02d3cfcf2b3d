"""Lead conversions: contact creation or merge, field copying, lead removal, the listing."""

from __future__ import annotations

from sellsim_checks import assert_error


def _lead(api, **attrs):
    r = api.post("/v2/leads", json={"data": attrs})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def _convert(api, lead_id):
    r = api.post("/v2/lead_conversions", json={"data": {"lead_id": lead_id}})
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["type"] == "lead_conversion"
    return r.json()["data"]


def test_conversion_creates_contact_and_removes_lead(api):
    lead = _lead(
        api,
        first_name="Ada",
        last_name="L",
        email="ada@x.test",
        tags=["t"],
        custom_fields={"KulooId": "K1"},
    )
    conv = _convert(api, lead["id"])
    assert conv["lead_id"] == lead["id"] and conv["organization_id"] is None
    assert conv["deal_id"] is not None  # create_deal defaults to true (option)
    contact = api.get(f"/v2/contacts/{conv['individual_id']}").json()["data"]
    assert (contact["first_name"], contact["last_name"], contact["email"], contact["tags"]) == (
        "Ada",
        "L",
        "ada@x.test",
        ["t"],
    )
    assert contact["custom_fields"] == {}  # not copied by default
    assert_error(api.get(f"/v2/leads/{lead['id']}"), 404, "not_found")
    assert lead["id"] not in {i["data"]["id"] for i in api.get("/v2/leads").json()["items"]}
    listed = api.get("/v2/lead_conversions", params={"lead_id": lead["id"]}).json()
    assert [i["data"] for i in listed["items"]] == [conv]
    assert_error(
        api.post("/v2/lead_conversions", json={"data": {"lead_id": lead["id"]}}),
        422,
        "incorrect_value",
        "/lead_id",
    )


def test_conversion_merges_into_contact_with_same_email(api, sim):
    sim.set_options(conversion_merge="email")
    existing = api.post("/v2/contacts", json={"data": {"last_name": "Old", "email": "A@x.test"}})
    existing = existing.json()["data"]
    conv = _convert(api, _lead(api, first_name="New", last_name="N", email="a@x.test")["id"])
    assert conv["individual_id"] == existing["id"]
    merged = api.get(f"/v2/contacts/{existing['id']}").json()["data"]
    assert merged["last_name"] == "Old" and merged["first_name"] == "New"
    sim.set_options(conversion_merge="never")
    conv2 = _convert(api, _lead(api, last_name="N2", email="a@x.test")["id"])
    assert conv2["individual_id"] != existing["id"]


def test_conversion_with_organization_and_options(api, sim):
    sim.set_options(conversion_copy_custom_fields=True, conversion_lead="kept")
    lead = _lead(
        api,
        last_name="L",
        organization_name="Acme",
        custom_fields={"KulooId": "K9", "Promo": ["welcome"]},
    )
    conv = _convert(api, lead["id"])
    org = api.get(f"/v2/contacts/{conv['organization_id']}").json()["data"]
    assert org["is_organization"] is True and org["name"] == "Acme"
    person = api.get(f"/v2/contacts/{conv['individual_id']}").json()["data"]
    assert person["contact_id"] == org["id"]
    assert person["custom_fields"] == {"KulooId": "K9", "Promo": ["welcome"]}
    assert api.get(f"/v2/leads/{lead['id']}").status_code == 200


def test_conversion_body_errors(api):
    assert_error(api.post("/v2/lead_conversions", json={"data": {}}), 422, "missing", "/lead_id")
    assert_error(
        api.post("/v2/lead_conversions", json={"data": {"lead_id": 1, "x": 1}}),
        422,
        "unknown",
        "/x",
    )
    assert_error(
        api.post("/v2/lead_conversions", json={"data": {"lead_id": "1"}}), 422, "invalid_type"
    )


def test_conversion_listing_paging_and_limits(api, sim):
    convs = [_convert(api, _lead(api, last_name=f"L{i}")["id"]) for i in range(7)]
    expected = sorted((c["id"] for c in convs), reverse=True)
    url, seen = "/v2/lead_conversions?per_page=3", []
    while url:
        body = api.get(url).json()
        assert body["meta"]["count"] == len(body["items"])
        seen += [i["data"]["id"] for i in body["items"]]
        url = body["meta"]["links"].get("next_page")
        assert url is None or "cursor=" in url
    assert seen == expected
    assert api.get("/v2/lead_conversions?per_page=200&page=50").status_code == 200
    assert_error(api.get("/v2/lead_conversions?per_page=201"), 400, "invalid_param")
    assert_error(api.get("/v2/lead_conversions?page=51"), 400, "invalid_param")
    assert_error(api.get("/v2/lead_conversions?sort_by=id"), 400, "invalid_param")
    c0 = convs[0]
    one = api.get("/v2/lead_conversions", params={"individual_id": c0["individual_id"]}).json()
    assert [i["data"]["id"] for i in one["items"]] == [c0["id"]]


def test_ui_conversion(api, sim):
    lead = _lead(api, last_name="UI")
    conv = sim.convert_lead(lead["id"], create_deal=True)
    assert conv["deal_id"] is not None
    assert api.get(f"/v2/leads/{lead['id']}").status_code == 404


def test_create_deal_default_and_explicit(api, sim):
    no_deal = api.post(
        "/v2/lead_conversions",
        json={"data": {"lead_id": _lead(api, last_name="A")["id"], "create_deal": False}},
    )
    assert no_deal.json()["data"]["deal_id"] is None
    sim.set_options(conversion_create_deal=False)
    assert _convert(api, _lead(api, last_name="B")["id"])["deal_id"] is None
    assert_error(
        api.post("/v2/lead_conversions", json={"data": {"lead_id": 1, "owner_id": "7"}}),
        422,
        "invalid_type",
        "/owner_id",
    )


def test_conversion_listing_filters_and_cursor_rules(api):
    with_org = _convert(api, _lead(api, last_name="O", organization_name="Org")["id"])
    plain = _convert(api, _lead(api, last_name="P")["id"])

    def ids(**params):
        r = api.get("/v2/lead_conversions", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["meta"]["count"] == len(body["items"])
        assert all(i["meta"]["type"] == "lead_conversion" for i in body["items"])
        return [i["data"]["id"] for i in body["items"]]

    assert ids(organization_id=with_org["organization_id"]) == [with_org["id"]]
    assert ids(deal_id=plain["deal_id"]) == [plain["id"]]
    assert ids(lead_id=plain["lead_id"], deal_id=with_org["deal_id"]) == []
    assert ids() == [plain["id"], with_org["id"]]  # id descending
    first = api.get("/v2/lead_conversions?per_page=1").json()
    cursor_url = first["meta"]["links"]["next_page"]
    assert "cursor=" in cursor_url and "page=" not in cursor_url.replace("per_page", "")
    cursor = cursor_url.split("cursor=")[1].split("&")[0]
    assert_error(api.get(f"/v2/lead_conversions?cursor={cursor}&page=1"), 400, "invalid_param")
    assert_error(api.get("/v2/lead_conversions?cursor=%%%"), 400, "invalid_param")
    assert_error(api.get("/v2/lead_conversions?per_page=0"), 400, "invalid_param")
    assert api.get("/v2/lead_conversions?lead_id=999999").json()["meta"]["links"] == {}


def test_conversion_merges_by_name_when_no_email_matches(api, sim):
    sim.set_options(conversion_merge="any")
    known = api.post(
        "/v2/contacts",
        json={"data": {"first_name": "Jo", "last_name": "Roe", "email": "jo@old.test"}},
    ).json()["data"]
    conv = _convert(api, _lead(api, first_name="jo", last_name="ROE", email="jo@new.test")["id"])
    assert conv["individual_id"] == known["id"]
    assert api.get(f"/v2/contacts/{known['id']}").json()["data"]["email"] == "jo@old.test"
    sim.set_options(conversion_merge="email")
    conv = _convert(api, _lead(api, first_name="Jo", last_name="Roe")["id"])
    assert conv["individual_id"] != known["id"]
