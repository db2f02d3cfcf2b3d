"""Sync API: sessions, queue pages, acks (both shapes), redelivery, deletes, plan switch."""

from __future__ import annotations

import pytest
from sellsim_checks import assert_error

DEV = {"X-Basecrm-Device-UUID": "11111111-2222-3333-4444-555555555555"}


def drain(api, headers=DEV, ack=True, ack_filter=lambda item: True):
    """Run one sync session as the official clients do; return every item served."""
    r = api.post("/v2/sync/start", headers=headers)
    if r.status_code == 204:
        return []
    assert r.status_code == 201, r.text
    session = r.json()
    assert session["meta"]["type"] == "sync_session"
    queue = session["data"]["queues"][0]
    assert queue["data"]["name"] == "main" and queue["meta"]["type"] == "sync_queue"
    out = []
    for _ in range(100):
        r = api.get(f"/v2/sync/{session['data']['id']}/queues/main", headers=headers)
        if r.status_code == 204:
            return out
        assert r.status_code == 200
        items = r.json()["items"]
        out += items
        keys = [i["meta"]["sync"]["ack_key"] for i in items if ack_filter(i)]
        if ack and keys:
            assert (
                api.post(
                    "/v2/sync/ack", headers=headers, json={"data": {"ack_keys": keys}}
                ).status_code
                == 202
            )
    raise AssertionError("queue never drained")


def test_first_sync_delivers_everything_then_nothing(api):
    lead = api.post("/v2/leads", json={"data": {"last_name": "S"}}).json()["data"]
    items = drain(api)
    by_type = {}
    for i in items:
        by_type.setdefault(i["meta"]["type"], []).append(i)
        assert i["meta"]["sync"]["event_type"] == "created"
    assert set(by_type) == {"lead", "user", "deal", "task", "note"}  # sync_other_types
    (item,) = by_type["lead"]
    assert item["data"] == api.get(f"/v2/leads/{lead['id']}").json()["data"]
    sync = item["meta"]["sync"]
    assert sync["ack_key"] == f"Lead-{lead['id']}-{sync['revision']}"
    assert api.post("/v2/sync/start", headers=DEV).status_code == 204


def test_first_page_is_empty_by_default_then_configurable(api, sim):
    sim.set_options(sync_other_types=False)
    r = api.post("/v2/sync/start", headers=DEV)
    sid = r.json()["data"]["id"]
    first = api.get(f"/v2/sync/{sid}/queues/main", headers=DEV).json()
    assert first["items"] == [] and first["meta"]["count"] == 0 and first["meta"]["count_left"] == 1
    sim.set_options(sync_empty_pages=0, sync_include_users=False)
    api.post("/v2/leads", json={"data": {"last_name": "S"}})
    sid = api.post("/v2/sync/start", headers={"X-Basecrm-Device-UUID": "d2"}).json()["data"]["id"]
    page = api.get(f"/v2/sync/{sid}/queues/main", headers={"X-Basecrm-Device-UUID": "d2"}).json()
    assert [i["meta"]["type"] for i in page["items"]] == ["lead"]


def test_unacked_items_come_back_next_session(api, sim):
    sim.set_options(sync_page_size=2)
    for n in range(5):
        api.post("/v2/leads", json={"data": {"last_name": f"L{n}"}})
    first = drain(
        api,
        ack_filter=lambda i: i["meta"]["type"] != "lead" or i["data"]["last_name"] in {"L0", "L1"},
    )
    assert len([i for i in first if i["meta"]["type"] == "lead"]) == 5
    again = drain(api)
    assert sorted(i["data"]["last_name"] for i in again) == ["L2", "L3", "L4"]
    assert drain(api) == []


def test_not_acking_at_all_redelivers_everything(api, sim):
    sim.set_options(sync_other_types=False)
    api.post("/v2/leads", json={"data": {"last_name": "A"}})
    assert len(drain(api, ack=False)) == 2
    assert len(drain(api, ack=False)) == 2


def test_both_ack_body_shapes(api):
    api.post("/v2/leads", json={"data": {"last_name": "A"}})
    items = drain(api, ack=False)
    keys = [i["meta"]["sync"]["ack_key"] for i in items]
    assert api.post("/v2/sync/ack", headers=DEV, json={"ack_keys": keys[:1]}).status_code == 202
    assert (
        api.post("/v2/sync/ack", headers=DEV, json={"data": {"ack_keys": keys[1:]}}).status_code
        == 202
    )
    assert api.post("/v2/sync/start", headers=DEV).status_code == 204
    assert_error(api.post("/v2/sync/ack", headers=DEV, json={"keys": []}), 400, "invalid_payload")


def test_updates_deletes_and_conversions(api, sim):
    keep = api.post("/v2/leads", json={"data": {"last_name": "K"}}).json()["data"]
    gone = api.post("/v2/leads", json={"data": {"last_name": "G"}}).json()["data"]
    conv = api.post("/v2/leads", json={"data": {"last_name": "C", "email": "c@x.test"}}).json()
    drain(api)
    sim.edit_record("lead", keep["id"], {"first_name": "Edited"})
    sim.delete_record("lead", gone["id"])
    conversion = sim.convert_lead(conv["data"]["id"])
    items = {(i["meta"]["type"], i["data"]["id"]): i for i in drain(api)}
    assert items[("lead", keep["id"])]["meta"]["sync"]["event_type"] == "updated"
    assert items[("lead", keep["id"])]["data"]["first_name"] == "Edited"
    assert items[("lead", gone["id"])]["data"] == {"id": gone["id"]}
    assert items[("lead", gone["id"])]["meta"]["sync"]["event_type"] == "deleted"
    assert items[("lead", conv["data"]["id"])]["data"] == {"id": conv["data"]["id"]}
    contact = items[("contact", conversion["individual_id"])]
    assert contact["meta"]["sync"]["event_type"] == "created"
    assert contact["data"]["email"] == "c@x.test"
    assert contact["meta"]["sync"]["ack_key"].startswith(f"Contact-{conversion['individual_id']}-")


def test_devices_are_independent(api, sim):
    sim.set_options(sync_other_types=False)
    api.post("/v2/leads", json={"data": {"last_name": "A"}})
    drain(api)
    other = drain(api, headers={"X-Basecrm-Device-UUID": "other"})
    assert len(other) == 2


def test_changes_during_a_session_join_it(api, sim):
    sim.set_options(
        sync_empty_pages=0, sync_page_size=1, sync_include_users=False, sync_other_types=False
    )
    api.post("/v2/leads", json={"data": {"last_name": "A"}})
    sid = api.post("/v2/sync/start", headers=DEV).json()["data"]["id"]
    assert len(api.get(f"/v2/sync/{sid}/queues/main", headers=DEV).json()["items"]) == 1
    late = api.post("/v2/leads", json={"data": {"last_name": "Late"}}).json()["data"]
    page = api.get(f"/v2/sync/{sid}/queues/main", headers=DEV).json()
    assert page["items"][0]["data"]["id"] == late["id"]
    assert api.get(f"/v2/sync/{sid}/queues/main", headers=DEV).status_code == 204


@pytest.mark.parametrize("path", ["/v2/sync/start", "/v2/sync/ack"])
def test_device_header_required(api, path):
    assert_error(api.post(path, json={"data": {"ack_keys": []}}), 400, "invalid_header")


def test_unknown_session_is_404(api):
    assert_error(api.get("/v2/sync/nope/queues/main", headers=DEV), 404, "not_found")


def test_plan_without_sync_api_is_403(api, sim):
    sim.set_account(sync_api=False)
    assert_error(api.post("/v2/sync/start", headers=DEV), 403, "forbidden")
    sim.set_account(sync_api=True)
    assert api.post("/v2/sync/start", headers=DEV).status_code == 201


def test_device_header_required_on_fetch(api):
    sid = api.post("/v2/sync/start", headers=DEV).json()["data"]["id"]
    assert_error(api.get(f"/v2/sync/{sid}/queues/main"), 400, "invalid_header")


def test_token_without_sync_scope_is_403(sim):
    from sellsim.seeds import default_seed

    token = "no-sync-scope-".ljust(64, "3")
    seed = default_seed()
    seed["accounts"][0]["tokens"].append(
        {"token": token, "name": "nosync", "scopes": ["read", "write", "profile"]}
    )
    sim.load_seed(seed)
    with sim.client(token=token) as api:
        assert_error(api.post("/v2/sync/start", headers=DEV), 403, "insufficient_scope")
        assert api.get("/v2/leads").status_code == 200  # the REST API still works


def test_device_limit(api, sim):
    sim.set_options(sync_device_limit=2)
    for n in range(2):
        assert (
            api.post("/v2/sync/start", headers={"X-Basecrm-Device-UUID": f"d{n}"}).status_code
            == 201
        )
    assert_error(
        api.post("/v2/sync/start", headers={"X-Basecrm-Device-UUID": "d2"}), 403, "forbidden"
    )
    assert api.post("/v2/sync/start", headers={"X-Basecrm-Device-UUID": "d0"}).status_code == 201


def test_only_the_latest_state_and_stale_acks_are_ignored(api, sim):
    sim.set_options(sync_include_users=False, sync_other_types=False)
    lead = api.post("/v2/leads", json={"data": {"last_name": "V1"}}).json()["data"]
    (first,) = drain(api, ack=False)
    api.put(f"/v2/leads/{lead['id']}", json={"data": {"last_name": "V2"}})
    api.put(f"/v2/leads/{lead['id']}", json={"data": {"last_name": "V3"}})
    (item,) = drain(api, ack=False)  # one item, the latest state, a newer revision
    assert item["data"]["last_name"] == "V3"
    assert item["meta"]["sync"]["revision"] > first["meta"]["sync"]["revision"]
    # acking the old revision does not acknowledge the newer one
    api.post(
        "/v2/sync/ack", headers=DEV, json={"data": {"ack_keys": [first["meta"]["sync"]["ack_key"]]}}
    )
    (again,) = drain(api)
    assert again["meta"]["sync"]["event_type"] == "updated"
    assert drain(api) == []
