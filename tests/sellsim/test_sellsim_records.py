"""Leads and contacts: create/get/PUT/DELETE, validation, custom field values, timestamps."""

from __future__ import annotations

import pytest
from sellsim_checks import ISO, assert_error


def _lead(api, **attrs):
    r = api.post("/v2/leads", json={"data": attrs})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def test_create_and_get_lead(api):
    r = api.post(
        "/v2/leads",
        json={
            "data": {"first_name": "Ada", "last_name": "L", "email": "ada@x.test", "tags": ["a"]}
        },
    )
    assert r.status_code == 200
    body = r.json()
    assert body["meta"] == {"type": "lead"}
    lead = body["data"]
    assert lead["status"] == "New"
    assert ISO.match(lead["created_at"]) and ISO.match(lead["updated_at"])
    assert lead["updated_at"] >= lead["created_at"]
    got = api.get(f"/v2/leads/{lead['id']}")
    assert got.status_code == 200 and got.json()["data"] == lead


def test_lead_needs_last_name_or_organization_name(api):
    assert_error(
        api.post("/v2/leads", json={"data": {"first_name": "A"}}), 422, "missing", "/last_name"
    )
    assert _lead(api, organization_name="Acme")["organization_name"] == "Acme"


def test_get_missing_is_404_and_delete_is_204(api):
    assert_error(api.get("/v2/leads/999999"), 404, "not_found")
    lead = _lead(api, last_name="Gone")
    r = api.delete(f"/v2/leads/{lead['id']}")
    assert r.status_code == 204 and r.content == b""
    assert_error(api.get(f"/v2/leads/{lead['id']}"), 404, "not_found")
    assert_error(api.delete(f"/v2/leads/{lead['id']}"), 404, "not_found")


def test_put_is_partial_tags_and_multiselect_replaced_custom_fields_merged(api):
    lead = _lead(
        api,
        first_name="A",
        last_name="B",
        tags=["x", "y"],
        custom_fields={"Promo": ["welcome", "upsell"], "Subscription": "weekly"},
    )
    r = api.put(
        f"/v2/leads/{lead['id']}",
        json={"data": {"tags": ["z"], "custom_fields": {"Promo": ["onboarding"]}}},
    )
    assert r.status_code == 200, r.text
    got = r.json()["data"]
    assert got["first_name"] == "A" and got["last_name"] == "B"
    assert got["tags"] == ["z"]
    assert got["custom_fields"] == {"Promo": ["onboarding"], "Subscription": "weekly"}
    r = api.put(f"/v2/leads/{lead['id']}", json={"data": {"custom_fields": {"Subscription": None}}})
    assert r.json()["data"]["custom_fields"] == {"Promo": ["onboarding"]}


def test_unknown_attribute_is_422_with_pointer(api, sim):
    body = assert_error(
        api.post("/v2/leads", json={"data": {"last_name": "A", "bogus": 1}}),
        422,
        "unknown",
        "/bogus",
    )
    assert body["errors"][0]["error"]["resource"] == "lead"
    sim.set_options(field_pointer_prefix="/data")
    assert_error(
        api.post("/v2/leads", json={"data": {"last_name": "A", "bogus": 1}}),
        422,
        "unknown",
        "/data/bogus",
    )


def test_read_only_attribute_rejected_by_default(api, sim):
    lead = _lead(api, last_name="A")
    assert_error(
        api.put(f"/v2/leads/{lead['id']}", json={"data": {"id": 5}}), 422, "unknown", "/id"
    )
    sim.set_options(reject_readonly_attributes=False)
    assert api.put(f"/v2/leads/{lead['id']}", json={"data": {"id": 5}}).status_code == 200


def test_every_error_is_listed(api):
    r = api.post(
        "/v2/leads",
        json={"data": {"last_name": "A", "bogus": 1, "custom_fields": {"Promo": ["Welcome"]}}},
    )
    codes = [e["error"]["code"] for e in r.json()["errors"]]
    assert r.status_code == 422 and codes == ["unknown", "incorrect_value"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Promo", ["Welcome"]),  # case
        ("Promo", "welcome"),  # not a list
        ("Subscription", "weekly "),  # trailing space
        ("Subscription", "Weekly"),
        ("Subscription", ["weekly"]),
        ("Source", "import"),
        ("Last active", "2025-13-01"),
        ("Last active", "4/27/2016"),
        ("KulooId", 12),
        ("Sync error", ["x"]),
    ],
)
def test_custom_field_values_checked_against_definitions(api, name, value):
    r = api.post("/v2/leads", json={"data": {"last_name": "A", "custom_fields": {name: value}}})
    assert_error(r, 422, "incorrect_value", f"/custom_fields/{name}")


def test_valid_custom_field_values_accepted(api):
    cf = {
        "Promo": ["welcome", "upsell"],
        "Subscription": "unsubscribed",
        "Source": "sync",
        "Last active": "2025-02-28",
        "KulooId": "K-1",
        "Sync error": "",
    }
    # dates read back as 2/28/2025 by default (custom_date_read_format, test_sellsim_fidelity)
    assert _lead(api, last_name="A", custom_fields=cf)["custom_fields"] == {
        **cf,
        "Last active": "2/28/2025",
    }


def test_unknown_custom_field_is_422_unknown(api):
    r = api.post("/v2/leads", json={"data": {"last_name": "A", "custom_fields": {"promo": []}}})
    assert_error(r, 422, "unknown", "/custom_fields/promo")


def test_lead_status_must_exist(api):
    assert_error(
        api.post("/v2/leads", json={"data": {"last_name": "A", "status": "Hot"}}),
        422,
        "incorrect_value",
        "/status",
    )


def test_contact_rules(api, sim):
    assert_error(api.post("/v2/contacts", json={"data": {"first_name": "A"}}), 422, "missing")
    assert_error(
        api.post("/v2/contacts", json={"data": {"is_organization": True}}), 422, "missing", "/name"
    )
    c = api.post(
        "/v2/contacts",
        json={
            "data": {
                "first_name": "A",
                "last_name": "B",
                "custom_fields": {"Subscription": "daily"},
            }
        },
    ).json()["data"]
    assert c["is_organization"] is False and c["name"] == "A B"
    assert_error(
        api.put(f"/v2/contacts/{c['id']}", json={"data": {"is_organization": True}}),
        422,
        "incorrect_value",
        "/is_organization",
    )
    org = api.post("/v2/contacts", json={"data": {"is_organization": True, "name": "Acme"}})
    assert org.status_code == 200
    # The Kuloo contact fields are for_contact only: not on companies.
    r = api.put(
        f"/v2/contacts/{org.json()['data']['id']}",
        json={"data": {"custom_fields": {"KulooId": "1"}}},
    )
    assert_error(r, 422, "unknown", "/custom_fields/KulooId")
    assert_error(api.delete("/v2/contacts/1"), 404, "not_found")
    assert api.delete(f"/v2/contacts/{c['id']}").status_code == 204


def test_updated_at_moves_with_the_clock_on_change_only(api, sim):
    sim.set_options(noop_write_bumps=False)  # the default (true): test_sellsim_fidelity
    lead = _lead(api, last_name="A")
    sim.advance_clock(60)
    same = api.put(f"/v2/leads/{lead['id']}", json={"data": {"last_name": "A"}}).json()["data"]
    assert same["updated_at"] == lead["updated_at"]
    moved = api.put(f"/v2/leads/{lead['id']}", json={"data": {"last_name": "Z"}}).json()["data"]
    assert moved["updated_at"] > lead["updated_at"] and moved["created_at"] == lead["created_at"]


def test_create_updated_lag_is_configurable(api, sim):
    sim.set_options(create_updated_lag=0)
    lead = _lead(api, last_name="A")
    assert lead["updated_at"] == lead["created_at"]


def test_custom_field_definitions(api):
    for resource in ("lead", "contact"):
        r = api.get(f"/v2/{resource}/custom_fields")
        assert r.status_code == 200
        items = r.json()["items"]
        defs = {i["data"]["name"]: i["data"] for i in items}
        assert all(i["meta"]["type"] == "custom_field" for i in items)
        assert set(defs) == {
            "Promo",
            "Subscription",
            "Source",
            "Last active",
            "KulooId",
            "Sync error",
            "Score",
            "Birthday",
            "Last login",
            "VIP",
        }
        assert (
            defs["Score"]["type"],
            defs["Birthday"]["type"],
            defs["Last login"]["type"],
            defs["VIP"]["type"],
        ) == ("number", "date", "datetime", "bool")
        assert defs["Promo"]["type"] == "multi_select_list"
        assert [c["name"] for c in defs["Subscription"]["choices"]] == [
            "daily",
            "weekly",
            "monthly",
            "unsubscribed",
        ]
        assert all(set(c) == {"id", "name"} for c in defs["Source"]["choices"])
        assert defs["Last active"]["type"] == "date" and defs["KulooId"]["choices"] is None
        if resource == "contact":
            assert (
                defs["KulooId"]["for_contact"] is True and defs["KulooId"]["for_company"] is False
            )
        else:
            assert "for_contact" not in defs["KulooId"]
    # They cannot be created through the API.
    assert_error(api.post("/v2/lead/custom_fields", json={"data": {"name": "X"}}), 404, "not_found")


def test_ui_rename_of_a_custom_field_moves_record_keys(api, sim):
    lead = _lead(api, last_name="A", custom_fields={"KulooId": "K1"})
    fid = next(
        i["data"]["id"]
        for i in api.get("/v2/lead/custom_fields").json()["items"]
        if i["data"]["name"] == "KulooId"
    )
    sim.edit_custom_field("lead", fid, {"name": "Kuloo Id"})
    got = api.get(f"/v2/leads/{lead['id']}").json()["data"]
    assert got["custom_fields"] == {"Kuloo Id": "K1"}


def test_users_and_accounts_self(api):
    user = api.get("/v2/users/self").json()
    assert user["meta"]["type"] == "user"
    assert {"id", "name", "email", "role", "status", "timezone"} <= set(user["data"])
    acc = api.get("/v2/accounts/self").json()
    assert acc["meta"]["type"] == "account"
    assert set(acc["data"]) == {
        "id",
        "name",
        "currency",
        "time_format",
        "timezone",
        "phone",
        "subdomain",
        "created_at",
        "updated_at",
    }
    assert_error(api.get("/v2/users/self?unknown=param"), 400, "invalid_param")


def test_prospect_status_is_computed_customer_status_settable(api):
    c = api.post("/v2/contacts", json={"data": {"last_name": "C"}}).json()["data"]
    assert (c["prospect_status"], c["customer_status"]) == ("none", "none")
    r = api.put(f"/v2/contacts/{c['id']}", json={"data": {"prospect_status": "current"}})
    assert_error(r, 422, "unknown", "/prospect_status")
    r = api.put(f"/v2/contacts/{c['id']}", json={"data": {"customer_status": "current"}})
    assert r.status_code == 200 and r.json()["data"]["customer_status"] == "current"
    r = api.put(f"/v2/contacts/{c['id']}", json={"data": {"customer_status": "lost"}})
    assert_error(r, 422, "incorrect_value", "/customer_status")


def test_owner_must_be_a_user_of_the_account(api):
    me = api.get("/v2/users/self").json()["data"]["id"]
    assert _lead(api, last_name="A", owner_id=me)["owner_id"] == me
    assert_error(
        api.post("/v2/leads", json={"data": {"last_name": "A", "owner_id": 424242}}),
        422,
        "incorrect_value",
        "/owner_id",
    )
    assert_error(
        api.post("/v2/leads", json={"data": {"last_name": "A", "owner_id": "1"}}),
        422,
        "invalid_type",
        "/owner_id",
    )


def test_number_custom_fields_read_back_as_strings(api, sim):
    assert _lead(api, last_name="A", custom_fields={"Score": 12})["custom_fields"] == {
        "Score": "12"
    }
    assert _lead(api, last_name="A", custom_fields={"Score": "-1.5"})["custom_fields"] == {
        "Score": "-1.5"
    }
    for bad in ["1e5", " 12", "NaN", "inf", "12,5", True, [1]]:
        r = api.post(
            "/v2/leads", json={"data": {"last_name": "A", "custom_fields": {"Score": bad}}}
        )
        assert_error(r, 422, "incorrect_value", "/custom_fields/Score")
    sim.set_options(custom_number_format="as_sent")
    assert _lead(api, last_name="A", custom_fields={"Score": 12})["custom_fields"] == {"Score": 12}


def test_contact_crud_and_partial_put(api):
    c = api.post(
        "/v2/contacts",
        json={
            "data": {
                "first_name": "A",
                "last_name": "B",
                "tags": ["x"],
                "custom_fields": {"Promo": ["welcome"], "KulooId": "K"},
            }
        },
    )
    assert c.status_code == 200 and c.json()["meta"] == {"type": "contact"}
    c = c.json()["data"]
    assert ISO.match(c["created_at"]) and ISO.match(c["updated_at"])
    r = api.put(
        f"/v2/contacts/{c['id']}",
        json={"data": {"tags": [], "custom_fields": {"Promo": ["onboarding", "upsell"]}}},
    )
    got = r.json()["data"]
    assert got["tags"] == [] and got["first_name"] == "A"
    assert got["custom_fields"] == {"Promo": ["onboarding", "upsell"], "KulooId": "K"}
    assert api.get(f"/v2/contacts/{c['id']}").json()["data"] == got
    assert_error(api.get("/v2/contacts/999999"), 404, "not_found")
    assert_error(
        api.put("/v2/contacts/999999", json={"data": {"last_name": "X"}}), 404, "not_found"
    )
    assert_error(
        api.put(f"/v2/contacts/{c['id']}", json={"data": {"shoe": 1}}), 422, "unknown", "/shoe"
    )
    assert_error(
        api.put(f"/v2/contacts/{c['id']}", json={"data": {"last_name": None}}),
        422,
        "missing",
        "/last_name",
    )
