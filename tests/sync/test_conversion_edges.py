"""Lead conversion's edge cases (docs/sync-rules.md, rule 5),
the engine in-process against sellsim over loopback, in both of sellsim's conversion modes
(``conversion_lead``: the lead removed, or kept) and both feeds (Sync API, polling).

1. A user's lead merged into a contact already linked to ANOTHER user: that link stays;
   the converted user is unlinked with a Sync error naming the contact and the other
   user, and is never pushed again (nothing lost, nothing duplicated, no ping-pong).
2. A lead converted into a contact that carries neither the user's email nor their
   KulooId (a Sell user changed or cleared them while converting, or a merge into a
   contact with another email): the user follows the conversion to that contact, which
   gets KulooId and the missing Kuloo fields; a changed email is a Sell-side change of the
   user's email (merged), not a new identity — never a second user nor a new lead.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio

from kuloo_daemon.services import open_services
from kuloo_daemon.store import users as user_store
from kuloo_daemon.store.sync import errors as sync_errors
from kuloo_daemon.sync import engine

from .test_engine_inprocess import fast_config, verified_channel


def routes(counters: dict, method: str, needle: str) -> int:
    return sum(
        n
        for route, n in counters["routes"].items()
        if route.split()[0] == method and needle in route
    )


def writes(counters: dict) -> int:
    """PUTs and POSTs to leads and contacts."""
    return sum(
        n
        for route, n in counters["routes"].items()
        if route.split()[0] in ("PUT", "POST") and ("/leads" in route or "/contacts" in route)
    )


async def sim(fn, *args, **kwargs):
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


async def record(sellsim, kind: str, rid: int) -> dict | None:
    return next((r for r in await sim(sellsim.records, kind) if r["id"] == rid), None)


async def user_doc(services, user_id: int):
    return await services.store.run(user_store.get, user_id)


async def all_users(services, cid: int):
    return (
        await services.store.run(user_store.list_page, cid, user_store.Filters(), None, 500)
    ).users


async def errors(services, cid: int):
    return (await services.store.run(sync_errors.errors, cid, None, 50))[0]


MODES = [("removed", True), ("removed", False), ("kept", True), ("kept", False)]


@pytest.fixture
def store(request):
    """The store a case runs on (``indirect``): SQLite, or a fresh PostgreSQL database (skips
    without a server, saying why)."""
    if request.param == "postgres":
        server = request.getfixturevalue("pg_server")
        url = server.url(request.getfixturevalue("pg_database"))
        return SimpleNamespace(store_section=lambda: {"url": url})
    return None


def on_stores(modes, postgres):
    """Every mode on SQLite, and ``postgres`` (one of them) on PostgreSQL too."""
    return pytest.mark.parametrize(
        ("conversion_lead", "sync_api", "store"),
        [*((*m, "sqlite") for m in modes), (*postgres, "postgres")],
        indirect=["store"],
    )


# ----------------------------------------------------------------------------- 1. into another user's contact


@on_stores(MODES, ("removed", True))
async def test_a_lead_merged_into_a_contact_linked_to_another_user_leaves_that_link_and_stops_the_user(
    services_config, sellsim, conversion_lead, sync_api, store
):
    """Ann's lead is converted and merged (Sell's duplicate rule: the same name) into the
    contact synced with Bea. Bea keeps the contact, untouched; Ann is unlinked with a Sync
    error naming the contact and Bea — not moved onto Bea's contact, not pushed again as a
    new lead (her switch is on), and the next runs write nothing.

    With the lead kept, nothing in Sell's feed tells of the conversion (the lead is not
    touched, the contact gains nothing): Ann stays on the lead Sell still has, which is
    neither lost nor duplicated — until that lead is deleted, which is then the same case.

    Planted bugs: the converted user followed onto Bea's contact (Bea's link taken, or two
    users on one contact); the unlinked user pushed again as a new lead (rule 7's "deleted
    with the switch on"); the error without the contact or the other user."""
    config = fast_config(services_config, sellsim, store)
    sellsim.set_options(conversion_lead=conversion_lead)
    sellsim.set_account(conversion_merge="name", **({} if sync_api else {"sync_api": False}))
    bea_contact = sellsim.create_record(
        "contact", {"first_name": "Sam", "last_name": "Lee", "email": "bea@example.com"}
    )
    async with open_services(config) as services:
        now = services.clock.now()
        cid = await verified_channel(services)
        ann = await services.store.run(
            user_store.add,
            cid,
            {
                "email": "ann@example.com",
                "first_name": "Sam",
                "last_name": "Lee",
                "add_to_crm": True,
                "frequency": "daily",
            },
            "admin",
            now,
        )
        run = await engine.run_channel(services, cid)
        assert (
            run.status.value == "ok"
            and run.counts["users_created"] == 1
            and run.counts["leads_created"] == 1
        )
        bea = next(u for u in await all_users(services, cid) if u.email == "bea@example.com")
        assert (bea.crm.kind, bea.crm.id) == ("contact", bea_contact["id"])
        lead_id = (await user_doc(services, ann.id)).crm.id
        before = await record(sellsim, "contact", bea_contact["id"])

        conversion = await sim(sellsim.convert_lead, lead_id)
        assert conversion["individual_id"] == bea_contact["id"]  # merged into Bea's contact
        if not sync_api:  # polling sees deletions on its daily reconciliation: it is due
            await services.clock.advance(engine.RECONCILE_EVERY.total_seconds())
        await sim(sellsim.reset_counters)
        run = await engine.run_channel(services, cid)
        counters = await sim(sellsim.counters)
        assert run.counts["leads_created"] == 0 and run.counts["users_created"] == 0, run
        got_bea = await user_doc(services, bea.id)
        assert (got_bea.crm.kind, got_bea.crm.id) == (
            "contact",
            bea_contact["id"],
        ) and not got_bea.sync_error
        after = await record(sellsim, "contact", bea_contact["id"])
        assert after["custom_fields"] == before["custom_fields"]  # Bea's contact: not a write
        got_ann = await user_doc(services, ann.id)
        if conversion_lead == "removed":
            assert run.status.value == "partial"
            assert got_ann.crm is None
            assert (
                f"contact {bea_contact['id']}" in got_ann.sync_error
                and "bea@example.com" in got_ann.sync_error
            )
            assert f"lead {lead_id}" in got_ann.sync_error
            assert [(e.user_id, e.code) for e in await errors(services, cid)] == [
                (ann.id, "converted_into_linked")
            ]
            assert writes(counters) == 0 and await sim(sellsim.records, "lead") == []
            log = await services.store.run(user_store.audit, ann.id, 5)
            assert log[0].field == "crm" and "already synced with bea@example.com" in log[0].note
        else:  # kept: nothing told; Ann stays on the lead Sell keeps
            assert run.status.value == "ok" and (got_ann.crm.kind, got_ann.crm.id) == (
                "lead",
                lead_id,
            )
            assert writes(counters) == 0 and not got_ann.sync_error
            # ... until a Sell user deletes that lead: then it is the same case, never a re-push.
            await sim(sellsim.delete_record, "lead", lead_id)
            if not sync_api:
                await services.clock.advance(engine.RECONCILE_EVERY.total_seconds())
            run = await engine.run_channel(services, cid)
            got_ann = await user_doc(services, ann.id)
            assert got_ann.crm is None and f"contact {bea_contact['id']}" in got_ann.sync_error
            assert run.counts["leads_created"] == 0

        # The next runs: Ann is not pushed again, Bea still syncs, nothing ping-pongs.
        for _ in range(2):
            await sim(sellsim.reset_counters)
            run = await engine.run_channel(services, cid)
            assert run.counts["leads_created"] == 0 and writes(await sim(sellsim.counters)) == 0, (
                run
            )
        assert await sim(sellsim.records, "lead") == []
        assert len(await all_users(services, cid)) == 2
        assert (await user_doc(services, ann.id)).crm is None
        await sim(
            sellsim.edit_record,
            "contact",
            bea_contact["id"],
            {"custom_fields": {"Subscription": "monthly"}},
        )
        await engine.run_channel(services, cid)
        assert (await user_doc(services, bea.id)).frequency == "monthly"
        assert (await user_doc(services, ann.id)).frequency == "daily"

        # A record of her own in Sell (her email) links Ann again and clears the error.
        own = await sim(
            sellsim.create_record, "lead", {"last_name": "Lee", "email": "ann@example.com"}
        )
        run = await engine.run_channel(services, cid)
        got_ann = await user_doc(services, ann.id)
        assert (got_ann.crm.kind, got_ann.crm.id) == ("lead", own["id"]) and not got_ann.sync_error
        assert await errors(services, cid) == []
        assert (await record(sellsim, "lead", own["id"]))["custom_fields"][
            "KulooId"
        ] == ann.kuloo_id


# ----------------------------------------------------------------------------- 2. a contact without email nor KulooId


CHANGES = {
    "email_changed": "fay.new@example.com",
    "email_cleared": None,
    "merged_into_another_email": "fay@elsewhere.example.com",
}


@pytest.mark.parametrize("change", list(CHANGES))
@on_stores(MODES, ("kept", False))
async def test_a_lead_converted_into_a_contact_without_the_users_email_or_kulooid_is_followed(
    services_config, sellsim, conversion_lead, sync_api, store, change
):
    """The conversion record still says lead → contact: the user is followed there, the
    contact gets KulooId and the Kuloo fields it lacks, a changed email is merged as a
    Sell-side change (a cleared one is written back from Kuloo), and the next runs are
    idle — never a second user, never a new lead, the kept lead never a duplicate.

    Planted bugs: a contact matching no user imported without asking its conversions (a
    second user, and the first one left on its lead — or, once the deletion arrives,
    unlinked with "already synced"); the lookup made for contacts a deletion of the same
    batch already explains (an extra request)."""
    config = fast_config(services_config, sellsim, store)
    sellsim.set_options(conversion_lead=conversion_lead)
    sellsim.set_account(conversion_merge="name", **({} if sync_api else {"sync_api": False}))
    new_email = CHANGES[change]
    async with open_services(config) as services:
        now = services.clock.now()
        cid = await verified_channel(services)
        fay = await services.store.run(
            user_store.add,
            cid,
            {
                "email": "fay@example.com",
                "first_name": "Fay",
                "last_name": "Ray",
                "add_to_crm": True,
                "promo_tags": ["welcome"],
                "frequency": "monthly",
                "source": "admin",
            },
            "admin",
            now,
        )
        assert (await engine.run_channel(services, cid)).status.value == "ok"
        lead_id = (await user_doc(services, fay.id)).crm.id

        if change == "merged_into_another_email":  # a contact added in Sell meanwhile, same name
            existing = await sim(
                sellsim.create_record,
                "contact",
                {"first_name": "Fay", "last_name": "Ray", "email": new_email},
            )
            conversion = await sim(sellsim.convert_lead, lead_id)
            assert conversion["individual_id"] == existing["id"]
        else:  # the Sell user changes (or clears) the email while converting
            conversion = await sim(sellsim.convert_lead, lead_id)
            await sim(
                sellsim.edit_record, "contact", conversion["individual_id"], {"email": new_email}
            )
        contact_id = conversion["individual_id"]
        assert not ((await record(sellsim, "contact", contact_id))["custom_fields"] or {}).get(
            "KulooId"
        )
        await sim(sellsim.reset_counters)
        run = await engine.run_channel(services, cid)
        counters = await sim(sellsim.counters)
        assert run.status.value == "ok", run
        assert run.counts["users_created"] == 0 and run.counts["leads_created"] == 0, run
        got = await user_doc(services, fay.id)
        assert (got.crm.kind, got.crm.id) == ("contact", contact_id) and not got.sync_error
        assert got.email == (new_email or "fay@example.com")
        assert (got.frequency, list(got.promo_tags), got.first_name) == (
            "monthly",
            ["welcome"],
            "Fay",
        )
        contact = await record(sellsim, "contact", contact_id)
        cf = contact["custom_fields"]
        assert (
            cf["KulooId"] == fay.kuloo_id
            and cf["Subscription"] == "monthly"
            and cf["Promo"] == ["welcome"]
        )
        assert cf["Source"] == "admin" and not cf.get("Sync error")
        assert contact["email"] == (new_email or "fay@example.com")
        assert [u.id for u in await all_users(services, cid)] == [fay.id]
        assert await errors(services, cid) == []
        assert writes(counters) == 1  # one PUT: the contact's Kuloo fields
        # lead_conversions: by the lead's deletion, or by the contact — never both
        assert routes(counters, "GET", "lead_conversions") == 1, counters["routes"]
        if new_email:
            log = await services.store.run(user_store.audit, fay.id, 10)
            assert any(e.field == "email" and e.new == new_email for e in log)
        leads = await sim(sellsim.records, "lead")
        assert [r["id"] for r in leads] == ([lead_id] if conversion_lead == "kept" else [])

        # The next runs are idle; the kept lead, edited, is neither a duplicate nor a user.
        if conversion_lead == "kept":
            await sim(sellsim.edit_record, "lead", lead_id, {"first_name": "Kept"})
            run = await engine.run_channel(services, cid)
            assert run.status.value == "ok" and run.counts["users_created"] == 0, run
        for _ in range(2):
            await sim(sellsim.reset_counters)
            run = await engine.run_channel(services, cid)
            assert run.status.value == "ok" and run.counts["leads_created"] == 0, run
            assert writes(await sim(sellsim.counters)) == 0
        if (
            not sync_api and conversion_lead == "removed"
        ):  # the deletion, found at last, changes nothing
            await services.clock.advance(engine.RECONCILE_EVERY.total_seconds())
            run = await engine.run_channel(services, cid)
            assert run.status.value == "ok" and run.counts["leads_created"] == 0, run
        got = await user_doc(services, fay.id)
        assert (got.crm.kind, got.crm.id) == ("contact", contact_id) and not got.sync_error
        assert [u.id for u in await all_users(services, cid)] == [fay.id]
        # ... and it keeps working on the contact, both ways
        await sim(
            sellsim.edit_record, "contact", contact_id, {"custom_fields": {"Subscription": "daily"}}
        )
        await engine.run_channel(services, cid)
        assert (await user_doc(services, fay.id)).frequency == "daily"


async def test_a_new_contact_is_asked_about_its_conversions_only_when_leads_are_linked(
    services_config, sellsim
):
    """The cost of case 2, bounded: a contact entered in Sell that matches no user costs one
    ``lead_conversions`` read when the channel has linked leads (it may be one of them,
    converted) — none on an initial sync, none for linked records, none when idle."""
    config = fast_config(services_config, sellsim)
    sellsim.create_record("contact", {"last_name": "First", "email": "first@example.com"})
    async with open_services(config) as services:
        cid = await verified_channel(services)
        await sim(sellsim.reset_counters)
        run = await engine.run_channel(services, cid)  # an initial sync: nothing linked yet
        assert run.counts["users_created"] == 1
        assert routes(await sim(sellsim.counters), "GET", "lead_conversions") == 0
        await sim(sellsim.create_record, "lead", {"last_name": "Lead", "email": "lead@example.com"})
        await engine.run_channel(services, cid)
        await sim(
            sellsim.create_record, "contact", {"last_name": "Second", "email": "second@example.com"}
        )
        await sim(sellsim.reset_counters)
        run = await engine.run_channel(
            services, cid
        )  # leads linked: the new contact is asked about
        assert run.counts["users_created"] == 1
        assert routes(await sim(sellsim.counters), "GET", "lead_conversions") == 1
        run = await engine.run_channel(
            services, cid
        )  # our own writes come back: linked now, not asked
        assert routes(await sim(sellsim.counters), "GET", "lead_conversions") == 1
        await sim(sellsim.reset_counters)
        run = await engine.run_channel(services, cid)
        assert (
            run.counts["requests"] <= 2
            and routes(await sim(sellsim.counters), "GET", "lead_conversions") == 0
        )


@pytest.mark.parametrize(("conversion_lead", "sync_api"), [("kept", True), ("removed", False)])
@pytest.mark.parametrize("kuloo_id", ["", "oops"])
async def test_a_kulooid_cleared_or_changed_while_converting_is_put_back_or_a_tampering_error(
    services_config, sellsim, conversion_lead, sync_api, kuloo_id
):
    """The conversion copies the lead's custom fields (``conversion_copy_custom_fields``) and
    the Sell user clears the KulooId — it is put back — or changes it — the contact is
    still the user's, with rule 6's Sync error naming the value to restore, and no other
    write; restoring it resumes sync. Never a second user nor an "unknown KulooId" record.
    Planted bug: such a contact not asked about its conversions (a new user, or an orphan
    record with an error while the user stays on the converted lead)."""
    config = fast_config(services_config, sellsim)
    sellsim.set_options(conversion_lead=conversion_lead, conversion_copy_custom_fields=True)
    if not sync_api:
        sellsim.set_account(sync_api=False)
    async with open_services(config) as services:
        now = services.clock.now()
        cid = await verified_channel(services)
        gil = await services.store.run(
            user_store.add,
            cid,
            {
                "email": "gil@example.com",
                "last_name": "Gil",
                "add_to_crm": True,
                "frequency": "daily",
            },
            "admin",
            now,
        )
        await engine.run_channel(services, cid)
        lead_id = (await user_doc(services, gil.id)).crm.id
        contact_id = (await sim(sellsim.convert_lead, lead_id))["individual_id"]
        await sim(
            sellsim.edit_record,
            "contact",
            contact_id,
            {"email": "gil@new.example.com", "custom_fields": {"KulooId": kuloo_id or None}},
        )
        await sim(sellsim.reset_counters)
        run = await engine.run_channel(services, cid)
        counters = await sim(sellsim.counters)
        got = await user_doc(services, gil.id)
        assert (got.crm.kind, got.crm.id) == ("contact", contact_id), run
        assert [u.id for u in await all_users(services, cid)] == [gil.id] and run.counts[
            "leads_created"
        ] == 0
        cf = (await record(sellsim, "contact", contact_id))["custom_fields"]
        if not kuloo_id:
            assert run.status.value == "ok" and cf["KulooId"] == gil.kuloo_id and not got.sync_error
            assert got.email == "gil@new.example.com"
            return
        assert run.status.value == "partial" and cf["KulooId"] == "oops"
        assert (
            f'Restore it to "{gil.kuloo_id}"' in cf["Sync error"] and "Restore it" in got.sync_error
        )
        assert got.email == "gil@example.com" and writes(counters) == 1  # the Sync error only
        assert [(e.user_id, e.code) for e in await errors(services, cid)] == [(gil.id, "tampered")]
        await sim(
            sellsim.edit_record, "contact", contact_id, {"custom_fields": {"KulooId": gil.kuloo_id}}
        )
        run = await engine.run_channel(services, cid)
        got = await user_doc(services, gil.id)
        assert (
            run.status.value == "ok" and not got.sync_error and got.email == "gil@new.example.com"
        )
        assert not (await record(sellsim, "contact", contact_id))["custom_fields"].get("Sync error")
