"""One end-to-end test per sync rule of docs/sync-rules.md, plus the issue's named cases.

The daemon runs as a subprocess against sellsim over loopback; the tests drive it only
through the control protocol and act in Sell through sellsim's API and ``/_sim/``, then
assert both sides and sellsim's request counters.
"""

from __future__ import annotations

import time

import pytest

from sellsim.seeds import default_seed

from .conftest import TAGS


def kuloo_ids(records):
    return [(r.get("custom_fields") or {}).get("KulooId") for r in records]


# ----------------------------------------------------------------------------- rule 1: plans


def test_rule1_plan_cap_links_the_oldest_and_says_how_to_raise_it(kuloo, sellsim):
    sellsim.load_seed(default_seed(leads=12))
    kuloo.create_channel(plan="free")
    run = kuloo.sync()
    assert run["status"] == "partial" and run["counts"]["users_created"] == 10
    assert len(kuloo.users()) == 10
    capped = [r for r in kuloo.leads() if not (r["custom_fields"] or {}).get("KulooId")]
    assert len(capped) == 2
    for r in capped:
        assert "Free plan syncs up to 10 leads and contacts" in r["custom_fields"]["Sync error"]
        assert "Starter (500)" in r["custom_fields"]["Sync error"]
    errors = kuloo.errors()
    assert sorted((e["user"], e["crm"]["id"], e["code"]) for e in errors) == sorted(
        (None, r["id"], "plan_cap") for r in capped
    )
    # Raising the plan links them, and their errors clear themselves.
    kuloo.call("channels.update", {"id": kuloo.channel, "plan": "starter"})
    run = kuloo.sync()
    assert run["status"] == "ok" and run["counts"]["users_created"] == 2
    assert all(kuloo_ids(kuloo.leads())) and kuloo.errors() == []
    assert all(not (r["custom_fields"] or {}).get("Sync error") for r in kuloo.leads())


# ----------------------------------------------------------------------------- rule 2: Sell → Kuloo


def test_rule2_a_lead_entered_in_sell_becomes_an_added_user_and_duplicates_get_an_error(
    kuloo, sellsim
):
    kuloo.create_channel()
    existing = kuloo.call(
        "users.add", {"channel": kuloo.channel, "email": "Ann@Example.com", "first_name": "Ann"}
    )
    new = sellsim.create_record(
        "lead",
        {
            "last_name": "Roe",
            "first_name": "Bo",
            "email": "bo@example.com",
            "custom_fields": {"Subscription": "daily", "Promo": ["welcome"]},
        },
    )
    match = sellsim.create_record("lead", {"last_name": "Doe", "email": "ann@example.com"})
    run = kuloo.sync()
    assert run["counts"]["users_created"] == 1
    bo = kuloo.user("bo@example.com")
    assert (bo["source"], bo["add_to_crm"], bo["frequency"], bo["promo_tags"]) == (
        "sync",
        False,
        "daily",
        ["welcome"],
    )
    assert bo["crm"] == {"kind": "lead", "id": new["id"]}
    lead = kuloo.lead(new["id"])
    assert (
        lead["custom_fields"]["KulooId"] == bo["kuloo_id"]
        and lead["custom_fields"]["Source"] == "sync"
    )
    ann = kuloo.user("ann@example.com")
    assert ann["id"] == existing["id"] and ann["crm"] == {
        "kind": "lead",
        "id": match["id"],
    }  # linked, not duplicated
    assert kuloo.lead(match["id"])["custom_fields"].get("KulooId") == existing["kuloo_id"]
    assert (
        kuloo.lead(match["id"])["last_name"] == "Doe"
        and kuloo.user("ann@example.com")["last_name"] == "Doe"
    )
    assert len(kuloo.users()) == 2

    # A second record with a linked email: a Sync error naming the record already linked, nothing else.
    dup = sellsim.create_record("lead", {"last_name": "Again", "email": "ANN@example.com"})
    sellsim.reset_counters()
    run = kuloo.sync()
    assert run["status"] == "partial"
    dup_now = kuloo.lead(dup["id"])
    assert f"lead {match['id']}" in dup_now["custom_fields"]["Sync error"]
    assert "KulooId" not in dup_now["custom_fields"]
    assert len(kuloo.users()) == 2 and kuloo.writes() == 1
    assert [(e["user"], e["crm"], e["code"]) for e in kuloo.errors()] == [
        (None, {"kind": "lead", "id": dup["id"]}, "duplicate")
    ]
    # Once the first record is deleted (and Ann does not want the CRM), the duplicate links.
    sellsim.delete_record("lead", match["id"])
    kuloo.sync()
    assert kuloo.user("ann@example.com")["crm"] == {"kind": "lead", "id": dup["id"]}
    assert kuloo.errors() == [] and not kuloo.lead(dup["id"])["custom_fields"].get("Sync error")


def test_person_contacts_are_imported_like_leads_and_organizations_never(kuloo, sellsim):
    kuloo.create_channel()
    person = sellsim.create_record("contact", {"last_name": "Poe", "email": "poe@example.org"})
    sellsim.create_record(
        "contact", {"is_organization": True, "name": "Poe Inc", "email": "inc@example.org"}
    )
    kuloo.sync()
    assert [u["email"] for u in kuloo.users()] == ["poe@example.org"]
    assert kuloo.user("poe@example.org")["crm"] == {"kind": "contact", "id": person["id"]}


# ----------------------------------------------------------------------------- rule 3: Kuloo → Sell


def test_rule3_users_to_add_are_pushed_as_leads_with_their_fields(kuloo, sellsim):
    kuloo.create_channel()
    pushed = kuloo.call(
        "users.add",
        {
            "channel": kuloo.channel,
            "email": "cy@example.com",
            "first_name": "Cy",
            "last_name": "Lee",
            "add_to_crm": True,
            "frequency": "monthly",
            "promo_tags": ["welcome", "upsell"],
            "source": "admin",
        },
    )
    kuloo.call("users.activity", {"id": pushed["id"]})
    kuloo.call(
        "users.add", {"channel": kuloo.channel, "email": "quiet@example.com"}
    )  # add_to_crm off
    run = kuloo.sync()
    assert run["counts"]["leads_created"] == 1
    (lead,) = kuloo.leads()
    assert kuloo.contacts() == []
    cf = lead["custom_fields"]
    assert (lead["email"], lead["first_name"], lead["last_name"]) == ("cy@example.com", "Cy", "Lee")
    assert (
        cf["KulooId"] == pushed["kuloo_id"]
        and cf["Source"] == "admin"
        and cf["Subscription"] == "monthly"
    )
    assert sorted(cf["Promo"]) == ["upsell", "welcome"] and cf.get("Last active")
    assert kuloo.user("cy@example.com")["crm"] == {"kind": "lead", "id": lead["id"]}
    # "add all users" pushes the rest too
    kuloo.call("channels.update", {"id": kuloo.channel, "add_all_users_to_crm": True})
    assert kuloo.sync()["counts"]["leads_created"] == 1
    assert sorted(r["email"] for r in kuloo.leads()) == ["cy@example.com", "quiet@example.com"]


# ----------------------------------------------------------------------------- rule 4: the merge


def test_rule4_changes_travel_both_ways_without_ping_pong_or_idle_writes(kuloo, sellsim):
    sellsim.load_seed(default_seed(leads=5))
    kuloo.create_channel()
    kuloo.sync()
    kuloo.sync()  # our own writes come back through the feed: no write answers them
    sellsim.reset_counters()
    run = kuloo.sync()
    assert kuloo.writes() == 0 and run["counts"]["sell_updated"] == 0
    assert run["counts"]["requests"] <= 2  # idle: a Sync session with nothing in it

    a, b = kuloo.users()[:2]
    kuloo.call("users.update", {"id": a["id"], "frequency": "monthly", "first_name": "Zed"})
    sellsim.edit_record("lead", b["crm"]["id"], {"custom_fields": {"Promo": ["onboarding"]}})
    sellsim.reset_counters()
    run = kuloo.sync()
    assert run["counts"]["sell_updated"] == 1 and run["counts"]["users_updated"] == 1
    la = kuloo.lead(a["crm"]["id"])
    assert la["custom_fields"]["Subscription"] == "monthly" and la["first_name"] == "Zed"
    assert kuloo.user(b["email"])["promo_tags"] == ["onboarding"]
    puts = {r: n for r, n in sellsim.counters()["routes"].items() if r.startswith("PUT")}
    assert puts == {"PUT /v2/leads/{id}": 1}
    audit = kuloo.call("users.audit", {"id": b["id"]})["entries"]
    assert (
        audit[0]["actor"] == "sync"
        and audit[0]["field"] == "promo_tags"
        and audit[0]["new"] == ["onboarding"]
    )
    # and then nothing more to do
    kuloo.sync()
    sellsim.reset_counters()
    kuloo.sync()
    assert kuloo.writes() == 0


def test_unsubscribe_in_kuloo_beats_weekly_in_sell_in_the_same_interval(kuloo, sellsim):
    kuloo.create_channel()
    user = kuloo.call(
        "users.add",
        {
            "channel": kuloo.channel,
            "email": "dee@example.com",
            "last_name": "Dee",
            "frequency": "daily",
            "add_to_crm": True,
        },
    )
    kuloo.sync()
    lead_id = kuloo.user("dee@example.com")["crm"]["id"]
    kuloo.call("users.update", {"id": user["id"], "unsubscribed": True, "actor": "app"})
    time.sleep(1.1)  # the Sell user's edit is the newer one: the opt-out still wins
    sellsim.edit_record("lead", lead_id, {"custom_fields": {"Subscription": "weekly"}})
    run = kuloo.sync()
    assert run["counts"]["conflicts"] == 1
    assert kuloo.lead(lead_id)["custom_fields"]["Subscription"] == "unsubscribed"
    assert kuloo.user("dee@example.com")["unsubscribed"] is True
    entries = kuloo.call("users.audit", {"id": user["id"]})["entries"]
    conflict = [e for e in entries if "conflict" in e["note"]]
    assert conflict and conflict[0]["field"] == "Subscription"
    assert conflict[0]["old"] == "weekly" and conflict[0]["new"] == "unsubscribed"


def test_newer_change_wins_a_conflict_and_sell_edits_of_kuloo_fields_are_put_back(kuloo, sellsim):
    kuloo.create_channel()
    user = kuloo.call(
        "users.add",
        {
            "channel": kuloo.channel,
            "email": "eve@example.com",
            "last_name": "Eve",
            "add_to_crm": True,
        },
    )
    kuloo.sync()
    lead_id = kuloo.user("eve@example.com")["crm"]["id"]
    kuloo.call("users.update", {"id": user["id"], "first_name": "Kuloo-side"})
    time.sleep(1.1)
    sellsim.edit_record(
        "lead",
        lead_id,
        {
            "first_name": "Sell-side",
            "custom_fields": {"Source": "signup", "KulooId": user["kuloo_id"]},
        },
    )
    kuloo.sync()
    assert kuloo.user("eve@example.com")["first_name"] == "Sell-side"
    lead = kuloo.lead(lead_id)
    assert (
        lead["first_name"] == "Sell-side" and lead["custom_fields"]["Source"] == "admin"
    )  # put back


# ----------------------------------------------------------------------------- rule 5: conversion


@pytest.mark.parametrize("merge_into_existing", [False, True])
def test_rule5_conversion_follows_the_user_to_the_contact(kuloo, sellsim, merge_into_existing):
    sellsim.set_options(conversion_merge="email")
    kuloo.create_channel()
    user = kuloo.call(
        "users.add",
        {
            "channel": kuloo.channel,
            "email": "fay@example.com",
            "last_name": "Fay",
            "add_to_crm": True,
            "promo_tags": ["welcome"],
            "frequency": "monthly",
        },
    )
    kuloo.sync()
    lead_id = kuloo.user("fay@example.com")["crm"]["id"]
    existing = None
    if merge_into_existing:  # a Sell user adds a contact for the same person: a duplicate for now
        existing = sellsim.create_record(
            "contact", {"last_name": "Fay", "email": "fay@example.com"}
        )
        kuloo.sync()
        assert (
            "already synced with lead"
            in kuloo.record("contact", existing["id"])["custom_fields"]["Sync error"]
        )
    conversion = sellsim.convert_lead(lead_id)
    kuloo.sync()
    linked = kuloo.user("fay@example.com")
    assert linked["crm"] == {"kind": "contact", "id": conversion["individual_id"]}
    if existing is not None:
        assert conversion["individual_id"] == existing["id"]
    contact = kuloo.record("contact", conversion["individual_id"])
    cf = contact["custom_fields"]
    assert (
        cf["KulooId"] == user["kuloo_id"]
        and cf["Subscription"] == "monthly"
        and cf["Promo"] == ["welcome"]
    )
    assert not cf.get("Sync error") and kuloo.errors() == []
    assert kuloo.leads() == []  # never re-created
    # and it keeps working on the contact
    sellsim.edit_record("contact", contact["id"], {"custom_fields": {"Subscription": "daily"}})
    kuloo.sync()
    assert kuloo.user("fay@example.com")["frequency"] == "daily"
    assert kuloo.leads() == []


def test_a_conversion_to_an_organization_only_unlinks_with_an_error_and_no_repush(kuloo, sellsim):
    kuloo.create_channel()
    kuloo.call(
        "users.add",
        {
            "channel": kuloo.channel,
            "email": "org@example.com",
            "last_name": "Org",
            "add_to_crm": True,
        },
    )
    kuloo.sync()
    lead_id = kuloo.user("org@example.com")["crm"]["id"]
    # a Sell user empties the last name and sets an organization: it converts to an organization only
    sellsim.edit_record("lead", lead_id, {"last_name": None, "organization_name": "Org Ltd"})
    kuloo.sync()
    conversion = sellsim.convert_lead(lead_id)
    assert conversion["individual_id"] is None
    kuloo.sync()
    user = kuloo.user("org@example.com")
    assert user["crm"] is None and "organization" in user["sync_error"]
    kuloo.sync()
    assert kuloo.leads() == []  # not pushed again


def test_a_lead_merged_into_another_users_contact_stops_that_user_with_an_error_naming_both(
    kuloo, sellsim
):
    """The other user's link stays; the converted user is unlinked with a Sync
    error naming the contact and the other user, shown by ``sync.errors``; not pushed again."""
    sellsim.set_account(conversion_merge="name")
    bea = sellsim.create_record(
        "contact", {"first_name": "Sam", "last_name": "Lee", "email": "bea@example.com"}
    )
    kuloo.create_channel()
    kuloo.call(
        "users.add",
        {
            "channel": kuloo.channel,
            "email": "ann@example.com",
            "first_name": "Sam",
            "last_name": "Lee",
            "add_to_crm": True,
        },
    )
    kuloo.sync()
    lead_id = kuloo.user("ann@example.com")["crm"]["id"]
    assert sellsim.convert_lead(lead_id)["individual_id"] == bea["id"]
    sellsim.reset_counters()
    assert kuloo.sync()["status"] == "partial"
    ann = kuloo.user("ann@example.com")
    assert ann["crm"] is None and f"contact {bea['id']}" in ann["sync_error"]
    assert kuloo.user("bea@example.com")["crm"] == {"kind": "contact", "id": bea["id"]}
    [error] = kuloo.errors()
    assert (error["user"], error["crm"], error["email"]) == (ann["id"], None, "ann@example.com")
    assert "bea@example.com" in error["error"] and f"lead {lead_id}" in error["error"]
    assert kuloo.writes() == 0
    assert kuloo.sync()["counts"]["leads_created"] == 0 and kuloo.leads() == []  # not pushed again


# ----------------------------------------------------------------------------- rule 6: KulooId tampering


def test_rule6_a_tampered_kulooid_stops_sync_for_the_record_until_restored(kuloo, sellsim):
    kuloo.create_channel()
    user = kuloo.call(
        "users.add",
        {
            "channel": kuloo.channel,
            "email": "gil@example.com",
            "last_name": "Gil",
            "add_to_crm": True,
        },
    )
    kuloo.sync()
    lead_id = kuloo.user("gil@example.com")["crm"]["id"]
    sellsim.edit_record(
        "lead", lead_id, {"first_name": "Sneaky", "custom_fields": {"KulooId": "oops"}}
    )
    kuloo.call("users.update", {"id": user["id"], "frequency": "daily"})
    sellsim.reset_counters()
    run = kuloo.sync()
    assert run["status"] == "partial"
    lead = kuloo.lead(lead_id)
    assert f'Restore it to "{user["kuloo_id"]}"' in lead["custom_fields"]["Sync error"]
    assert (
        lead["custom_fields"]["KulooId"] == "oops"
        and lead["custom_fields"].get("Subscription") != "daily"
    )
    assert (
        kuloo.user("gil@example.com")["first_name"] == ""
        and "Restore it" in kuloo.user("gil@example.com")["sync_error"]
    )
    assert kuloo.writes() == 1  # the Sync error only
    sellsim.edit_record("lead", lead_id, {"custom_fields": {"KulooId": user["kuloo_id"]}})
    run = kuloo.sync()
    assert run["status"] == "ok"
    lead = kuloo.lead(lead_id)
    assert (
        not lead["custom_fields"].get("Sync error")
        and lead["custom_fields"]["Subscription"] == "daily"
    )
    assert kuloo.user("gil@example.com")["sync_error"] == ""
    assert kuloo.user("gil@example.com")["first_name"] == "Sneaky"


# ----------------------------------------------------------------------------- rule 7: stop sync


def test_rule7_stop_sync_repush_and_token_removal(kuloo, sellsim):
    kuloo.create_channel()
    stay = kuloo.call(
        "users.add",
        {
            "channel": kuloo.channel,
            "email": "on@example.com",
            "last_name": "On",
            "add_to_crm": True,
        },
    )
    stop = kuloo.call(
        "users.add",
        {
            "channel": kuloo.channel,
            "email": "off@example.com",
            "last_name": "Off",
            "add_to_crm": True,
        },
    )
    kuloo.sync()
    on_lead, off_lead = (
        kuloo.user("on@example.com")["crm"]["id"],
        kuloo.user("off@example.com")["crm"]["id"],
    )
    kuloo.call("users.update", {"id": stop["id"], "add_to_crm": False})
    sellsim.delete_record("lead", on_lead)
    sellsim.delete_record("lead", off_lead)
    kuloo.sync()
    assert kuloo.user("off@example.com")["crm"] is None
    again = kuloo.user("on@example.com")["crm"]
    assert (
        again["kind"] == "lead" and again["id"] != on_lead
    )  # deleted with the switch on: pushed again
    assert sorted(r["email"] for r in kuloo.leads()) == ["on@example.com"]
    kuloo.sync()
    assert len(kuloo.leads()) == 1  # stopped stays stopped

    # token removed: nothing runs, links kept; adding it back resumes without re-linking
    kuloo.call("channels.update", {"id": kuloo.channel, "api_token": None})
    sellsim.edit_record("lead", again["id"], {"custom_fields": {"Subscription": "monthly"}})
    run = kuloo.call("sync.run", {"channel": kuloo.channel})
    assert run["status"] == "skipped" and "token" in run["reason"]
    assert kuloo.user("on@example.com")["crm"] == again
    from sellsim.seeds import DEMO_TOKEN

    kuloo.call("channels.update", {"id": kuloo.channel, "api_token": DEMO_TOKEN})
    run = kuloo.sync()
    assert run["counts"]["leads_created"] == 0 and run["counts"]["users_created"] == 0
    assert (
        kuloo.user("on@example.com")["crm"] == again
        and kuloo.user("on@example.com")["frequency"] == "monthly"
    )
    assert stay["id"] == kuloo.user("on@example.com")["id"]


# ----------------------------------------------------------------------------- rule 8: every path meets


def test_rule8_link_admin_and_sell_edits_end_in_the_same_place(kuloo, sellsim):
    kuloo.create_channel()
    a = kuloo.call(
        "users.add",
        {"channel": kuloo.channel, "email": "h1@example.com", "last_name": "H", "add_to_crm": True},
    )
    b = kuloo.call(
        "users.add",
        {"channel": kuloo.channel, "email": "h2@example.com", "last_name": "H", "add_to_crm": True},
    )
    c = sellsim.create_record("lead", {"last_name": "H", "email": "h3@example.com"})
    kuloo.sync()
    kuloo.call(
        "users.update", {"id": a["id"], "unsubscribed": True, "actor": "app"}
    )  # the link's path
    kuloo.call("users.update", {"id": b["id"], "frequency": "disabled"})  # an admin
    sellsim.edit_record(
        "lead", c["id"], {"custom_fields": {"Subscription": "monthly", "Promo": ["upsell"]}}
    )
    kuloo.sync()
    assert (
        kuloo.lead(kuloo.user("h1@example.com")["crm"]["id"])["custom_fields"]["Subscription"]
        == "unsubscribed"
    )
    assert (
        kuloo.lead(kuloo.user("h2@example.com")["crm"]["id"])["custom_fields"].get("Subscription")
        is None
    )
    h3 = kuloo.user("h3@example.com")
    assert (h3["frequency"], h3["promo_tags"]) == ("monthly", ["upsell"])
    sellsim.reset_counters()
    kuloo.sync()
    assert kuloo.writes() == 0


# ----------------------------------------------------------------------------- failures


def test_a_refused_write_becomes_a_sync_error_retried_a_few_times_then_clears_itself(
    kuloo, sellsim
):
    kuloo.create_channel()
    user = kuloo.call(
        "users.add",
        {
            "channel": kuloo.channel,
            "email": "ivy@example.com",
            "last_name": "Ivy",
            "add_to_crm": True,
        },
    )
    kuloo.sync()
    lead_id = kuloo.user("ivy@example.com")["crm"]["id"]
    kuloo.call(
        "users.update", {"id": user["id"], "last_name": ""}
    )  # Sell refuses a lead without one
    run = kuloo.sync()
    assert run["status"] == "partial" and run["counts"]["errors"] >= 1
    lead = kuloo.lead(lead_id)
    assert lead["last_name"] == "Ivy" and lead["custom_fields"]["Sync error"].startswith(
        "Sell refused the update"
    )
    assert kuloo.user("ivy@example.com")["sync_error"] == lead["custom_fields"]["Sync error"]
    assert [(e["user"], e["code"]) for e in kuloo.errors()] == [(user["id"], "sell_refused")]
    for _ in range(4):
        kuloo.sync()
    refused = sellsim.counters()["statuses"].get("422", 0)
    assert refused == 3  # retried at most sync.batch_retries times, then it waits for a change
    kuloo.call("users.update", {"id": user["id"], "last_name": "Ivy-Rose"})
    assert kuloo.sync()["status"] == "ok"
    lead = kuloo.lead(lead_id)
    assert lead["last_name"] == "Ivy-Rose" and not lead["custom_fields"].get("Sync error")
    assert kuloo.user("ivy@example.com")["sync_error"] == "" and kuloo.errors() == []


def test_a_401_marks_the_channel_and_ends_the_run(kuloo, sellsim):
    sellsim.load_seed(default_seed(leads=3))
    kuloo.create_channel()
    seed = default_seed(leads=3)
    seed["accounts"][0]["tokens"] = [{"token": "another-token-".ljust(64, "z"), "name": "other"}]
    sellsim.load_seed(seed)
    run = kuloo.call("sync.run", {"channel": kuloo.channel})
    assert (run["status"], run["reason"]) == ("failed", "token_rejected")
    doc = kuloo.call("channels.get", {"id": kuloo.channel})
    assert doc["connection"]["status"] == "needs_new_token"
    assert doc["sync"]["last_run"]["id"] == run["id"]
    assert kuloo.call("sync.run", {"channel": kuloo.channel})["status"] == "skipped"


def test_rule1_a_lowered_plan_keeps_the_oldest_links_and_suspends_the_newest(kuloo, sellsim):
    sellsim.load_seed(default_seed(leads=12))
    kuloo.create_channel(plan="starter")
    kuloo.sync()
    users = sorted(kuloo.users(), key=lambda u: u["id"])
    assert len(users) == 12 and all(u["crm"] for u in users)
    kuloo.call("channels.update", {"id": kuloo.channel, "plan": "free"})
    kuloo.sync()
    waiting = [u for u in kuloo.users() if u["sync_error"]]
    assert len(waiting) == 2 and all(u["crm"] for u in waiting)  # still linked, not synced
    assert all(
        "Free plan syncs up to 10" in kuloo.lead(u["crm"]["id"])["custom_fields"]["Sync error"]
        for u in waiting
    )
    # linked at the same (manual) time: the later links are the newest
    assert {u["id"] for u in waiting} == {u["id"] for u in users[-2:]}
    before = {u["email"]: u["promo_tags"] for u in waiting}
    for u in waiting:  # an edit in Sell waits too
        sellsim.edit_record(
            "lead",
            u["crm"]["id"],
            {"custom_fields": {"Promo": ["upsell", "onboarding"], "Subscription": "monthly"}},
        )
    kuloo.sync()
    assert {u["email"]: kuloo.user(u["email"])["promo_tags"] for u in waiting} == before
    kuloo.call("channels.update", {"id": kuloo.channel, "plan": "starter"})
    kuloo.sync()
    assert all(kuloo.user(u["email"])["frequency"] == "monthly" for u in waiting)
    assert all(
        sorted(kuloo.user(u["email"])["promo_tags"]) == ["onboarding", "upsell"] for u in waiting
    )
    assert all(not kuloo.user(u["email"])["sync_error"] for u in waiting) and kuloo.errors() == []
    assert all(not (r["custom_fields"] or {}).get("Sync error") for r in kuloo.leads())


def test_a_promo_value_kuloo_does_not_know_is_a_sync_error_until_fixed(kuloo, sellsim):
    kuloo.create_channel()
    # after the check, a Sell admin adds a choice the channel does not have
    fid = next(
        d["id"]
        for d in sellsim.state()["accounts"][0]["definitions"]["lead"]
        if d["name"] == "Promo"
    )
    sellsim.edit_custom_field("lead", fid, {"choices": [*TAGS, "legacy"]})
    lead = sellsim.create_record(
        "lead",
        {"last_name": "Old", "email": "old@example.com", "custom_fields": {"Promo": ["legacy"]}},
    )
    run = kuloo.sync()
    assert run["status"] == "partial" and kuloo.users() == []
    text = kuloo.lead(lead["id"])["custom_fields"]["Sync error"]
    assert "'legacy'" in text and "welcome, onboarding, upsell" in text
    assert [(e["user"], e["code"]) for e in kuloo.errors()] == [(None, "bad_value")]
    sellsim.edit_record("lead", lead["id"], {"custom_fields": {"Promo": ["welcome"]}})
    assert kuloo.sync()["status"] == "ok"
    assert kuloo.user("old@example.com")["promo_tags"] == ["welcome"]
    assert kuloo.errors() == [] and not kuloo.lead(lead["id"])["custom_fields"].get("Sync error")


def test_without_the_sync_api_polling_syncs_both_ways_at_its_lower_bound(kuloo, sellsim):
    seed = default_seed(leads=5)
    seed["accounts"][0]["sync_api"] = False
    sellsim.load_seed(seed)
    kuloo.create_channel()
    assert kuloo.sync()["counts"]["users_created"] == 5
    kuloo.sync()  # our KulooId writes come back once, with no write
    sellsim.reset_counters()
    run = kuloo.sync()
    assert (
        run["counts"]["requests"] == 2 and kuloo.writes() == 0
    )  # a page of leads, a page of contacts
    lead = kuloo.leads()[0]
    sellsim.edit_record("lead", lead["id"], {"custom_fields": {"Subscription": "monthly"}})
    kuloo.sync()
    assert kuloo.user(lead["email"])["frequency"] == "monthly"
    # deletions are found by listing everything, once a day of business time
    gone = kuloo.leads()[1]
    sellsim.delete_record("lead", gone["id"])
    kuloo.sync()
    assert kuloo.user(gone["email"])["crm"] is not None
    kuloo.call("clock.advance", {"seconds": 86400})
    kuloo.sync()
    assert kuloo.user(gone["email"])["crm"] is None


def test_a_create_that_may_have_landed_is_looked_up_before_any_second_post(kuloo, sellsim):
    kuloo.create_channel()
    user = kuloo.call(
        "users.add",
        {
            "channel": kuloo.channel,
            "email": "jo@example.com",
            "last_name": "Jo",
            "add_to_crm": True,
        },
    )
    # Sell creates the lead, then the connection drops before the answer
    sellsim.set_faults([{"kind": "drop_after", "path": "/v2/leads", "method": "POST", "count": 1}])
    run = kuloo.call("sync.run", {"channel": kuloo.channel})
    assert run["counts"]["leads_created"] == 0 and run["counts"]["errors"] == 1
    (lead,) = kuloo.leads()
    assert lead["custom_fields"]["KulooId"] == user["kuloo_id"]
    assert kuloo.user("jo@example.com")["crm"] is None
    kuloo.sync()
    assert kuloo.user("jo@example.com")["crm"] == {"kind": "lead", "id": lead["id"]}
    assert len(kuloo.leads()) == 1
    assert sellsim.counters()["routes"].get("POST /v2/leads", 0) == 1  # never a second POST
    assert kuloo.user("jo@example.com")["sync_error"] == ""
