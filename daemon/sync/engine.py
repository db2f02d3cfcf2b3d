"""The sync engine: the thin shell around the rules — read the feed, apply, write to Sell.

One run of one channel (``run_channel``):

1. ``store.sync.runs.begin_run`` — a ``running`` run, or ``skipped`` with the reason (no token,
   connection not verified: links are kept, so adding the token back resumes).
2. Pull: every batch of ``crm.feed.ChangeFeed`` (Sync API or polling, leads and
   contacts). Deleted leads that were linked are looked up in ``lead_conversions`` (and
   the contact they became read); so are records that collide with a user linked to the
   other kind, for conversions that keep the lead, and new contacts that match no user
   while leads are linked, for conversions that changed the email and KulooId
   (``kept_conversions``; more than a couple of those in a batch — a bulk import into
   Sell — are matched against one listing of the conversions, newest first, rather than
   a read each: ``matching_conversions``). The batch is applied in ONE store unit of work
   (``apply_batch``, where the rules decide), the Sell writes it asks for are made
   (changed fields only), what Sell took is confirmed — and only then is the batch
   acknowledged to Sell (resuming the feed).
3. Push: Kuloo-side changes of linked users (changed fields only) and users to push as
   new leads. A push is crash-safe: its intent is stamped before the POST; a user found
   stamped (a crash, or a create that ``maybe_applied``) is looked up by KulooId, then by
   email, before any second POST.
4. ``finish_run``: ``ok``, ``partial`` (some records have Sync errors; or reason
   ``rate_limited``: a request was still 429 after its retries — Sell's hourly budget is
   spent —, with ``retry_at`` the next whole hour of business time; what the run applied
   is kept and the next run picks up from there), ``failed`` (the reason:
   ``token_rejected`` after a 401 — the channel then needs a new token —,
   ``sell_unavailable``, ``internal``). A run before a previous run's ``retry_at`` first
   makes ONE request (``SellClient.probe``): still 429, it ends at once (``rate_limited``,
   the same ``retry_at``), so a lockout of many minutes is never hammered.

Events: ``sync.started``, ``sync.finished`` (the run document) and ``users.changed``
``{"channel", "ids"}`` once per batch, never once per user. One run per channel at a
time: ``run_channel`` waits for a run in progress, then runs a fresh one.

Imports ``crm``, ``store`` (through ``Store.run``), ``services`` and the rules of this package.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
import trio

from ..crm import errors as E
from ..crm.client import SellClient, write_fence
from ..crm.feed import ChangeFeed, RecordChanged
from ..crm.records import LeadConversion, parse_ts
from ..rules import linking, schedule, texts
from ..rules.values import KULOO_ID, sell_payload, sell_values
from ..scheduler import ClockJob, Job
from ..services import LeaseLost, Services
from ..store import outage
from ..store.health import OK as STORE_OK
from ..store.health import StoreUnavailable
from ..store.sync import batch as sync_batch
from ..store.sync import lookups as sync_lookups
from ..store.sync import pushes as sync_pushes
from ..store.sync import runs as sync_runs
from ..store.sync.types import (
    ConversionIn,
    DeletionIn,
    Outcome,
    PushIn,
    RecordIn,
    RunDoc,
    RunStart,
    SellWrite,
)
from ..vocabulary import RESTORED_AT, SyncRunStatus, email_key
from . import connection

log = structlog.get_logger("kuloo.sync")

LINK_CHUNK = 25  # leads created between two store commits of their links
RECONCILE_EVERY = timedelta(days=1)  # polling mode: how often deletions are looked for
RECONCILED_AT = "reconciled_at"  # kept in the channel's feed state


def _locks(services: Services) -> dict[int, trio.Lock]:
    return services.sync_locks


def channel_lock(services: Services, channel_id: int) -> trio.Lock:
    """The lock a sync run of the channel holds (one run at a time per channel)."""
    return _locks(services).setdefault(channel_id, trio.Lock())


def conversion_ref(conv: LeadConversion) -> linking.ConversionRef:
    return linking.ConversionRef(
        conv.id, conv.lead_id, conv.individual_id, conv.organization_id, parse_ts(conv.created_at)
    )


def record_in(kind: str, record: Any) -> RecordIn:
    email = record.email.strip() if isinstance(record.email, str) else None
    return RecordIn(
        kind,
        record.id,
        sell_values(record),
        email or None,
        record.updated,
        bool(getattr(record, "is_organization", False)),
        tuple(getattr(record, "cleaned", ())),
    )


class _Run:
    def __init__(self, services: Services, start: RunStart, sell: SellClient) -> None:
        self.services = services
        self.start = start
        self.channel_id = start.run.channel_id
        self.sell = sell
        self.counts: dict[str, int] = {}
        self.retries = services.config["sync.batch_retries"]
        self.erasure_key = services.config.erasure_key()
        self.pulled: set[tuple[str, int]] = set()
        self.errors_cleared = False
        self.linked: set[tuple[str, int]] = {
            (k, i) for k, ids in start.linked_ids.items() for i in ids
        }
        self.kinds_linked = {
            k for k, ids in start.linked_ids.items() if ids
        }  # kinds linked at some point of the run

    def add(self, counts: dict[str, int]) -> None:
        for key, n in counts.items():
            self.counts[key] = self.counts.get(key, 0) + n

    def relinked(self, outcome: Outcome) -> None:
        self.linked.difference_update(outcome.unlinked)
        self.linked.update(outcome.linked)
        self.kinds_linked.update(k for k, _i in outcome.linked)

    def publish_users(self, ids: Sequence[int]) -> None:
        if ids:
            self.services.publish(
                "users.changed", {"channel": self.channel_id, "ids": sorted(set(ids))}
            )

    # -- pull

    async def pull(self) -> dict[str, Any] | None:
        feed = ChangeFeed(self.sell, now=self.services.clock.now)
        state: dict[str, Any] | None = None
        # Polling cannot see deletions: it finds them by listing every record, which costs a
        # page per 100 records — so only once per RECONCILE_EVERY of business time.
        now = self.services.clock.now()
        last = self.start.feed_state.get(RECONCILED_AT)
        reconcile = last is None or now - datetime.fromisoformat(last) >= RECONCILE_EVERY
        known = (
            {
                "lead": [i for k, i in self.linked if k == "lead"],
                "contact": [i for k, i in self.linked if k == "contact"],
            }
            if reconcile
            else None
        )
        async with contextlib.aclosing(
            feed.batches(self.start.feed_state, known_ids=known)
        ) as batches:
            async for batch in batches:
                records: list[RecordIn] = []
                deletions: list[DeletionIn] = []
                created: dict[
                    int, datetime | None
                ] = {}  # contacts' created_at, for kept_conversions
                for change in batch.changes:
                    self.pulled.add((change.kind, change.id))
                    if isinstance(change, RecordChanged):
                        records.append(record_in(change.kind, change.record))
                        if change.kind == "contact":
                            created[change.id] = parse_ts(
                                getattr(change.record, "created_at", None)
                            )
                    else:
                        deletions.append(
                            DeletionIn(
                                change.kind,
                                change.id,
                                await self.conversion(change.kind, change.id),
                            )
                        )
                explained = {
                    ("contact", d.conversion.individual_id)
                    for d in deletions
                    if d.conversion is not None and d.conversion.individual_id is not None
                }
                records, kept = await self.kept_conversions(records, explained, created)
                deletions.extend(kept)
                if records or deletions or batch.final:
                    now = self.services.clock.now()
                    outcome = await self.services.store.run(
                        sync_batch.apply_batch,
                        self.channel_id,
                        records,
                        deletions,
                        batch.state,
                        now,
                        self.retries,
                        self.erasure_key,
                    )
                    self.add(outcome.counts)
                    self.relinked(outcome)
                    touched = await self.write(outcome.writes)
                    self.publish_users([*outcome.changed_users, *touched])
                state = batch.state
        if state is not None and reconcile and state.get("mode") == "poll":
            state[RECONCILED_AT] = now.isoformat()
        return state

    async def recheck(self) -> None:
        """Records whose error may have cleared (a cap with room, a duplicate now alone) are
        read again by id — they may not change in Sell for a long time."""
        keys = [
            k
            for k in await self.services.store.run(sync_lookups.orphans_to_recheck, self.channel_id)
            if k not in self.pulled
        ]
        for kind in ("lead", "contact"):
            ids = [i for k, i in keys if k == kind]
            for start in range(0, len(ids), 100):
                chunk = ids[start : start + 100]
                listing = self.sell.list_leads if kind == "lead" else self.sell.list_contacts
                read = [r async for r in listing(ids=chunk)]
                found = [record_in(kind, r) for r in read]
                gone = sorted(set(chunk) - {r.id for r in found})
                found, kept = await self.kept_conversions(
                    found, created={r.id: parse_ts(getattr(r, "created_at", None)) for r in read}
                )
                outcome = await self.services.store.run(
                    sync_batch.apply_batch,
                    self.channel_id,
                    found,
                    [*kept, *(DeletionIn(kind, i) for i in gone)],
                    None,
                    self.services.clock.now(),
                    self.retries,
                    self.erasure_key,
                )
                self.add({k: v for k, v in outcome.counts.items() if k != "pulled"})
                self.relinked(outcome)
                touched = await self.write(outcome.writes)
                self.publish_users([*outcome.changed_users, *touched])

    async def kept_conversions(
        self,
        records: list[RecordIn],
        explained: set[tuple[str, int]] | None = None,
        created: Mapping[int, datetime | None] | None = None,
    ) -> tuple[list[RecordIn], list[DeletionIn]]:
        """Conversions that no deletion of this batch announces (rule 5): the lead was kept,
        or its deletion comes later (polling sees deletions once a day).

        A contact colliding with a user linked to a lead is what that lead became when its
        conversions say so: the user follows it (as for a converted, deleted lead). So is a
        contact that matches no user at all (the email and KulooId changed or cleared while
        converting, or a merge into a contact with another email), when its own conversions
        name a linked lead — rather than a second user. A lead colliding with a user linked
        to the contact it became is the kept lead: dropped (as if deleted — never a duplicate
        nor a second user). Only records not linked are asked about, only when the channel
        links the other kind (contacts matching no user: when it linked leads as the run
        began), and never a contact a deletion of the batch already explains (``explained``):
        one store crossing, then one ``lead_conversions`` read per record in question — except
        for many contacts matching no user (a bulk import into Sell): those are matched against
        one listing of the conversions, newest first (``matching_conversions``). ``created``:
        the contacts' ``created_at`` (a contact without one is asked by its id).
        """
        other = {"lead": "contact", "contact": "lead"}
        explained = explained or set()
        unlinked = [
            r
            for r in records
            if other[r.kind] in self.kinds_linked
            and (r.kind, r.id) not in self.linked
            and (r.kind, r.id) not in explained
        ]
        if not unlinked:
            return records, []
        lookups = await self.services.store.run(
            sync_lookups.conversion_lookups,
            self.channel_id,
            unlinked,
            bool(self.start.linked_ids.get("lead")),
        )
        kept: list[DeletionIn] = []
        dropped: set[int] = set()
        questions = [rec.id for rec, lead_id, _link in lookups if lead_id is None]
        into: dict[int, list[linking.ConversionRef]] = {}
        if len(questions) > linking.FEW_CONVERSION_QUESTIONS:
            into = await self.matching_conversions(questions, created or {})
        found: Sequence[Any]  # linking's conversion refs, or Sell's conversions: the same fields
        conv: Any
        for rec, lead_id, link in lookups:
            if lead_id is None:  # a contact matching no user: did a linked lead become it?
                found = (
                    into[rec.id]
                    if rec.id in into
                    else [
                        conversion_ref(c)
                        for c in await self.sell.lead_conversions(individual_id=rec.id)
                    ]
                )
                for conv in sorted(found, key=lambda c: c.id):  # the oldest conversion's user first
                    if (
                        conv.individual_id == rec.id
                        and conv.lead_id is not None
                        and ("lead", conv.lead_id) in self.linked
                        and conv.lead_id not in dropped
                    ):
                        kept.append(
                            DeletionIn(
                                "lead",
                                conv.lead_id,
                                ConversionIn(conv.lead_id, rec.id, conv.organization_id, rec),
                            )
                        )
                        dropped.add(conv.lead_id)
                continue
            found = await self.sell.lead_conversions(lead_id=lead_id)
            if rec.kind == "contact":
                conv = next(
                    (c for c in found if c.lead_id == lead_id and c.individual_id == rec.id), None
                )
                if conv is not None:  # the kept lead, if in this batch too, is left out
                    kept.append(
                        DeletionIn(
                            "lead",
                            lead_id,
                            ConversionIn(lead_id, rec.id, conv.organization_id, rec),
                        )
                    )
                    dropped.add(lead_id)
            elif link is not None and any(
                c.lead_id == rec.id and c.individual_id == link[1] for c in found
            ):
                dropped.add(rec.id)
                kept.append(DeletionIn("lead", rec.id))
        if dropped:
            records = [r for r in records if not (r.kind == "lead" and r.id in dropped)]
        return records, kept

    async def matching_conversions(
        self,
        contact_ids: Sequence[int],
        created: Mapping[int, datetime | None],
    ) -> dict[int, list[linking.ConversionRef]]:
        """The conversions into each of many contacts, from ONE listing read newest first
        (``linking.ConversionScan``: it stops once every contact is explained or the listing
        is older than any of them, after ``listing_pages`` pages at most); a contact left open
        by the cap, or without ``created_at``, is asked by its id — so the cost is never more
        than a few pages above one read per contact."""
        scan = linking.ConversionScan.of(
            ((i, created.get(i)) for i in contact_ids),
            lambda lead_id: ("lead", lead_id) in self.linked,
        )
        if scan.open:
            # An async generator (it has aclose), typed AsyncIterator by the client.
            async with contextlib.aclosing(
                self.sell.lead_conversion_pages(per_page=linking.CONVERSIONS_PER_PAGE)
            ) as listing:  # type: ignore[type-var]
                async for page in listing:
                    if scan.take([conversion_ref(c) for c in page]):
                        break
                else:
                    scan.finish()
        out = scan.answered()
        for contact_id in scan.ask_by_id():
            out[contact_id] = [
                conversion_ref(c)
                for c in await self.sell.lead_conversions(individual_id=contact_id)
            ]
        return out

    async def conversion(self, kind: str, crm_id: int) -> ConversionIn | None:
        """What a deleted, linked lead became (None: it was deleted, not converted)."""
        if kind != "lead" or (kind, crm_id) not in self.linked:
            return None
        found = await self.sell.lead_conversions(lead_id=crm_id)
        conv = next((c for c in found if c.lead_id == crm_id), None)
        if conv is None:
            return None
        contact = None
        if conv.individual_id is not None:
            try:
                contact = record_in("contact", await self.sell.get_contact(conv.individual_id))
            except E.NotFoundError:
                return None  # the contact is gone too: a plain deletion
        return ConversionIn(crm_id, conv.individual_id, conv.organization_id, contact)

    # -- writes

    async def write(self, writes: Sequence[SellWrite]) -> list[int]:
        """Partial PUTs; what Sell took and refused is recorded in one unit of work."""
        if not writes:
            return []
        touched, cleared = await self._write(writes)
        self.errors_cleared = self.errors_cleared or cleared
        return touched

    async def _write(self, writes: Sequence[SellWrite]) -> tuple[list[int], bool]:
        accepted: list[SellWrite] = []
        refused: list[tuple[SellWrite, str]] = []
        for w in writes:
            try:
                await self.put(w.kind, w.id, sell_payload(w.fields, w.promo_order))
                accepted.append(w)
                self.add({"sell_updated": 1})
            except E.NotFoundError:
                continue  # deleted meanwhile: the feed brings the deletion
            except E.ValidationError as exc:
                summary = E.summarize_errors(exc.errors) or exc.message
                refused.append((w, summary))
                self.add({"errors": 1})
                text = texts.sell_refused(summary)
                if w.user_id is not None:
                    with contextlib.suppress(E.ValidationError, E.NotFoundError):
                        await self.put(w.kind, w.id, sell_payload({"Sync error": text}))
                        accepted.append(SellWrite(w.kind, w.id, {"Sync error": text}, w.user_id))
        return await self.services.store.run(
            sync_pushes.confirm_writes,
            self.channel_id,
            accepted,
            refused,
            self.services.clock.now(),
        )

    async def put(self, kind: str, crm_id: int, payload: dict[str, Any]) -> None:
        if kind == "lead":
            await self.sell.update_lead(crm_id, payload)
        else:
            await self.sell.update_contact(crm_id, payload)

    # -- push

    async def push(self) -> None:
        for _round in range(2):  # a second round writes the Sync errors that cleared in the first
            self.errors_cleared = False
            plan = await self.services.store.run(
                sync_pushes.plan_pushes, self.channel_id, self.services.clock.now(), self.retries
            )
            self.publish_users(await self.write(plan.updates))
            await self.create(plan.creates)
            if not self.errors_cleared:
                break

    async def create(self, pushes: Sequence[PushIn]) -> None:
        for start in range(0, len(pushes), LINK_CHUNK):
            created: list[tuple[int, str, int, dict[str, Any]]] = []
            failed: list[tuple[int, str, bool]] = []
            for p in pushes[start : start + LINK_CHUNK]:
                found = await self.find(p) if p.look_up_first else None
                if found is not None:
                    created.append((p.user_id, found[0], found[1], found[2]))
                    continue
                body = {
                    k: v for k, v in sell_payload(p.values, p.promo_order).items() if v is not None
                }
                body["custom_fields"] = {
                    k: v for k, v in body.get("custom_fields", {}).items() if v is not None
                }
                if not body.get("last_name"):
                    # Sell needs a last name (or an organization, which would convert to one).
                    body["last_name"] = p.email.split("@", 1)[0]
                try:
                    lead = await self.sell.create_lead(body)
                except E.AuthenticationError:
                    raise
                except E.SellError as exc:
                    if not exc.maybe_applied and not isinstance(
                        exc, E.ValidationError | E.BadRequestError
                    ):
                        raise  # Sell unreachable: the run fails; the intent stays for a lookup
                    failed.append(
                        (
                            p.user_id,
                            E.summarize_errors(exc.errors) or exc.message,
                            exc.maybe_applied,
                        )
                    )
                    self.add({"errors": 1})
                    continue
                self.add({"leads_created": 1})
                created.append((p.user_id, "lead", lead.id, p.values))
            touched = await self.services.store.run(
                sync_pushes.link_pushed, self.channel_id, created, failed, self.services.clock.now()
            )
            self.linked.update((k, i) for _u, k, i, _v in created)
            self.kinds_linked.update(k for _u, k, _i, _v in created)
            self.publish_users(touched)

    async def find(self, p: PushIn) -> tuple[str, int, dict[str, Any]] | None:
        """The record an earlier, unconfirmed POST for this user may have made: by KulooId,
        then email."""
        for kind, listing in (("lead", self.sell.list_leads), ("contact", self.sell.list_contacts)):
            async for rec in listing(custom_fields={KULOO_ID: p.kuloo_id}):
                if (rec.custom_fields or {}).get(KULOO_ID) == p.kuloo_id:
                    return kind, rec.id, sell_values(rec)
        email = email_key(p.email)
        async for rec in self.sell.list_leads(email=p.email):
            if email_key(rec.email) == email and (rec.custom_fields or {}).get(KULOO_ID) in (
                None,
                "",
                p.kuloo_id,
            ):
                return "lead", rec.id, sell_values(rec)
        return None


async def run_channel(
    services: Services, channel_id: int, *, scheduled: bool = False
) -> RunDoc | None:
    """Run one sync of the channel now; a run in progress is waited for, then a fresh one runs.

    On PostgreSQL the channel's sync lease is held for the run (``services.Leases``): a
    run in another daemon is waited for too; a scheduled run leased elsewhere is skipped
    (None). So is a scheduled run no longer due once the lock (and lease) is ours: a
    ``sync.run`` of this daemon, or another daemon, ran the channel meanwhile — the
    scheduler read it due before that run began."""
    lock = channel_lock(services, channel_id)
    async with lock, services.leases.hold("sync", channel_id, wait=not scheduled) as held:
        if not held or (scheduled and not await _still_due(services, channel_id)):
            return None
        # Fencing: every Sell write of the run checks first that the lease is certainly still
        # ours (``Leases.fence``); a refusal (LeaseLost) ends the run at once, writing nothing.
        fenced = write_fence.set(services.leases.fence("sync", channel_id))
        try:
            return await _run(services, channel_id)
        finally:
            write_fence.reset(fenced)


async def _still_due(services: Services, channel_id: int) -> bool:
    override = services.config["sync.cadence_seconds"]
    for cid, plan, last, verified in await services.store.run(
        sync_runs.sync_schedule_inputs, channel_id
    ):
        if cid == channel_id:
            return (
                schedule.next_sync_at(cid, schedule.cadence(plan, override), last, verified)
                <= services.clock.now()
            )
    return False


async def _run(services: Services, channel_id: int) -> RunDoc:
    start = await services.store.run(sync_runs.begin_run, channel_id, services.clock.now())
    if start.run.status == SyncRunStatus.SKIPPED:
        log.info("sync skipped", channel_id=channel_id, reason=start.run.reason)
        services.publish("sync.finished", start.run)
        return start.run
    services.publish("sync.started", start.run)
    structlog.contextvars.bind_contextvars(sync_run=start.run.id, channel_id=channel_id)
    try:
        # A run that starts has its channel's token (begin_run skips a channel without one).
        sell = await services.sell_pool.client(start.token)  # type: ignore[arg-type]
        run = _Run(services, start, sell)
        before = sell.requests_sent
        status, reason, error, state = SyncRunStatus.OK, "", "", None
        retry_at = None
        try:
            if start.retry_at is not None and services.clock.now() < start.retry_at:
                await sell.probe()  # Sell locked us out until then: one request, no retries
            state = await run.pull()
            await run.recheck()
            await run.push()
        except LeaseLost:
            raise  # another daemon may hold the channel now: nothing more is written here
        except StoreUnavailable as exc:  # logged once by the store's health, not per run
            status, reason, error = SyncRunStatus.FAILED, outage.STORE_UNAVAILABLE, str(exc)
        except trio.Cancelled:
            if services.store.health.state != STORE_OK:  # the lease lapsed during the outage
                _close_when_back(services, start.run.id, "the database was unreachable")
            raise
        except E.AuthenticationError as exc:
            # The run's token (set, as above).
            await connection.token_rejected(services, channel_id, start.token, exc)  # type: ignore[arg-type]
            status, reason, error = SyncRunStatus.FAILED, "token_rejected", str(exc)
        except E.RateLimitedError as exc:
            retry_at = schedule.rate_limit_retry_at(services.clock.now(), start.retry_at)
            when = retry_at.isoformat()
            log.warning("sync run stopped: sell rate limit", error=str(exc), retry_at=when)
            status, reason = SyncRunStatus.PARTIAL, "rate_limited"
            error = f"{exc}; Sell should take requests again at {when} (business time)"
        except E.SellError as exc:
            log.warning("sync run stopped: sell failed", error=str(exc))
            status, reason, error = SyncRunStatus.FAILED, "sell_unavailable", str(exc)
        except Exception as exc:  # a bug must not take the daemon down; the run says it failed
            log.exception("sync run failed")
            status, reason, error = SyncRunStatus.FAILED, "internal", f"{type(exc).__name__}: {exc}"
        run.counts["requests"] = sell.requests_sent - before
        if status == SyncRunStatus.OK and run.counts.get("errors"):
            status = SyncRunStatus.PARTIAL
        if state is not None and status in (SyncRunStatus.OK, SyncRunStatus.PARTIAL):
            state.pop(RESTORED_AT, None)  # the whole read after a restore is done: no more adopting
        try:
            doc = await services.store.run(
                sync_runs.finish_run,
                start.run.id,
                status,
                reason,
                error,
                run.counts,
                state,
                services.clock.now(),
                retry_at,
            )
        except StoreUnavailable:
            _close_when_back(services, start.run.id, error or "the database was unreachable")
            raise
        log.info("sync finished", status=doc.status.value, reason=reason, **doc.counts)
        services.publish("sync.finished", doc)
        await replan(services)
        return doc
    finally:
        structlog.contextvars.unbind_contextvars("sync_run", "channel_id")


def _close_when_back(services: Services, run_id: int, error: str) -> None:
    """The run's own store failure left it ``running``: closed as soon as the store answers."""
    log.warning(
        "sync run interrupted by the store's outage; closed when the store answers", sync_run=run_id
    )
    now = services.clock.now()
    services.store.health.on_recovery(
        f"close sync run {run_id} (store_unavailable)",
        lambda: outage.close_interrupted_run(run_id, now, error),
    )


# ----------------------------------------------------------------------------- the scheduler's job


def _plan_state(services: Services) -> dict[str, Any]:
    return services.sync_plan


async def replan(services: Services) -> datetime | None:
    """Re-read when the next channel is due (after a run, a verification, a plan change)."""
    override = services.config["sync.cadence_seconds"]
    inputs = await services.store.run(sync_runs.sync_schedule_inputs)
    times = [
        schedule.next_sync_at(cid, schedule.cadence(p, override), last, verified)
        for cid, p, last, verified in inputs
    ]
    state = _plan_state(services)
    state["next"] = min(times, default=None)
    state["plan_at"] = trio.current_time() + services.scheduler.tick_seconds
    return state["next"]


def poke(services: Services) -> None:
    """A channel changed (created, verified, a new plan): look at the schedule again now.

    No store crossing here: the ``sync`` job becomes due at once, runs the channels due
    (a newly verified one is due at once) and re-plans.
    """
    _plan_state(services)["next"] = services.clock.now()


def jobs(services: Services) -> list[Job | ClockJob]:
    """Each verified channel syncs at its plan's cadence, on its own phase of the interval.

    ``sync`` (business time) runs the channels that are due; ``sync-plan`` (monotonic, every
    tick) re-reads when the next one is due, so a channel verified in the background is
    noticed; runs and channel edits re-plan at once. ``[sync] scheduled = false`` leaves
    syncing to ``sync.run``.
    """
    state = _plan_state(services)
    override = services.config["sync.cadence_seconds"]

    async def plan() -> None:
        await replan(services)

    # PostgreSQL: a daemon takes at most ``parallel_runs`` due channels at a time, so the
    # other daemons' schedulers claim the rest (services.Leases) and capacity grows with them.
    slots = trio.CapacityLimiter(
        services.config["sync.parallel_runs"] if services.leases.shared else math.inf
    )

    async def one(cid: int) -> None:
        async with slots:
            await run_channel(services, cid, scheduled=True)

    async def run() -> None:
        now = services.clock.now()
        inputs = await services.store.run(sync_runs.sync_schedule_inputs)
        due = [
            cid
            for cid, p, last, verified in inputs
            if schedule.next_sync_at(cid, schedule.cadence(p, override), last, verified) <= now
        ]
        async with trio.open_nursery() as nursery:
            for cid in due:
                nursery.start_soon(one, cid)
        await replan(services)

    if not services.config["sync.scheduled"]:
        return []
    return [
        ClockJob("sync", lambda now: state["next"], run),
        Job("sync-plan", lambda now: state["plan_at"], plan),
    ]


async def next_sync_at(services: Services, channel_id: int) -> datetime | None:
    """When the channel's next run is due (None: it does not sync now)."""
    inputs = await services.store.run(sync_runs.sync_schedule_inputs)
    override = services.config["sync.cadence_seconds"]
    for cid, plan, last, verified in inputs:
        if cid == channel_id:
            return schedule.next_sync_at(cid, schedule.cadence(plan, override), last, verified)
    return None
