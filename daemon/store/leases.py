"""Leases: several daemons on one PostgreSQL database share the channels' work.

A daemon claims a channel's sync run or delivery pass (``Lease.kind``) with
``SELECT … FOR UPDATE SKIP LOCKED`` inside a transaction: a row another daemon is
claiming at that instant is skipped, never waited for or taken twice. The claim writes
``lease_owner`` (the daemon's id) and ``lease_until``; the daemon renews its leases while
it works (``heartbeat``) and releases them when done. Every lease time is the database's
``now()``, so the hosts' clocks may disagree. A lease past its ``lease_until`` belonged to
a daemon that died or stalled: the next claim takes it over and first repairs what the
dead daemon left half-done in that channel — its sync run left ``running`` is marked
``failed``/``interrupted``, its mail left ``sending`` becomes ``uncertain`` (it may have
left; never sent twice).

PostgreSQL only (SQL with ``$n`` parameters): on SQLite one daemon holds the store
(``files.hold_state``), and ``services.Leases`` claims nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tortoise.transactions import in_transaction

from ..vocabulary import INTERRUPTED, OutboxState, SyncRunStatus
from . import NotFound

SYNC = "sync"
DELIVERY = "delivery"
KINDS = (SYNC, DELIVERY)


@dataclass(frozen=True)
class Claim:
    held: bool
    holder: str = ""  # who holds it when not ``held``
    until: datetime | None = None
    taken_over: str = ""  # the expired owner whose lease this claim took over
    last_run: int = 0  # the channel's newest sync run when claimed (runs after it are ours)


def _conn() -> Any:
    from tortoise import connections

    return connections.get("default")


async def register(daemon_id: str, host: str, pid: int) -> None:
    await _conn().execute_query(
        "INSERT INTO daemon (id, host, pid, started_at, heartbeat) VALUES ($1, $2, $3, now(), now())",
        [daemon_id, host, pid],
    )


async def heartbeat(daemon_id: str, seconds: float) -> set[tuple[int, str]]:
    """This daemon is alive: its heartbeat and every lease it holds move to now() + seconds.
    Returns the leases renewed, (channel id, kind): one missing was taken over meanwhile."""
    async with in_transaction() as conn:
        await conn.execute_query("UPDATE daemon SET heartbeat = now() WHERE id = $1", [daemon_id])
        renewed = await conn.execute_query_dict(
            "UPDATE lease SET lease_until = now() + make_interval(secs => $2) WHERE lease_owner = $1 "
            "RETURNING channel_id, kind",
            [daemon_id, float(seconds)],
        )
        await conn.execute_query(  # a run in progress shows its daemon before it ends
            "UPDATE sync_run SET daemon_id = $1 WHERE daemon_id = '' AND status = $2 AND channel_id IN "
            "(SELECT channel_id FROM lease WHERE lease_owner = $1 AND kind = $3)",
            [daemon_id, SyncRunStatus.RUNNING.value, SYNC],
        )
    return {(row["channel_id"], row["kind"]) for row in renewed}


async def claim(channel_id: int, kind: str, owner: str, seconds: float, now: datetime) -> Claim:
    """Take the channel's ``kind`` lease if it is free, ours or expired; ``now`` (the clock)
    dates the repairs of a taken-over lease. ``NotFound`` when there is no such channel
    (as on SQLite, where the use case itself says so; a waiting ``hold`` would never end)."""
    assert kind in KINDS
    conn = _conn()
    await conn.execute_query(
        "INSERT INTO lease (channel_id, kind, lease_owner) SELECT $1, $2, '' WHERE EXISTS "
        "(SELECT 1 FROM channel WHERE id = $1) ON CONFLICT (channel_id, kind) DO NOTHING",
        [channel_id, kind],
    )
    async with in_transaction() as tx:
        rows = await tx.execute_query_dict(
            "SELECT id, lease_owner, lease_until < now() AS expired FROM lease "
            "WHERE channel_id = $1 AND kind = $2 "
            "AND (lease_owner = '' OR lease_owner = $3 OR lease_until IS NULL OR lease_until < now()) "
            "FOR UPDATE SKIP LOCKED",
            [channel_id, kind, owner],
        )
        if rows:
            row = rows[0]
            await tx.execute_query(
                "UPDATE lease SET lease_owner = $2, lease_until = now() + make_interval(secs => $3) WHERE id = $1",
                [row["id"], owner, float(seconds)],
            )
            previous = row["lease_owner"]
            taken_over = previous if previous and previous != owner else ""
            if taken_over:
                await _repair(tx, channel_id, kind, taken_over, now)
            last = await tx.execute_query_dict(
                "SELECT coalesce(max(id), 0) AS last FROM sync_run WHERE channel_id = $1",
                [channel_id],
            )
            return Claim(True, taken_over=taken_over, last_run=last[0]["last"])
    rows = await conn.execute_query_dict(
        "SELECT lease_owner, lease_until FROM lease WHERE channel_id = $1 AND kind = $2",
        [channel_id, kind],
    )
    if not rows:  # the INSERT above made the row unless the channel does not exist
        raise NotFound(f"no channel {channel_id}")
    return Claim(False, holder=rows[0]["lease_owner"], until=rows[0]["lease_until"])


async def _repair(tx: Any, channel_id: int, kind: str, dead: str, now: datetime) -> None:
    """What the daemon ``dead`` left half-done in this channel, before anyone goes on."""
    if kind == SYNC:
        await tx.execute_query(  # runs it finished but had not yet stamped (stamped at release)
            "UPDATE sync_run SET daemon_id = $2 WHERE channel_id = $1 AND daemon_id = ''",
            [channel_id, dead],
        )
        await tx.execute_query(
            "UPDATE sync_run SET status = $2, reason = $3, finished_at = $4, daemon_id = $5, "
            "error = 'the daemon running it stopped before it finished' "
            "WHERE channel_id = $1 AND status = $6",
            [
                channel_id,
                SyncRunStatus.FAILED.value,
                INTERRUPTED,
                now,
                dead,
                SyncRunStatus.RUNNING.value,
            ],
        )
    else:
        await tx.execute_query(
            "UPDATE outbox_message SET state = $2, last_error = 'the daemon stopped while sending', "
            "updated_at = $3 WHERE channel_id = $1 AND state = $4",
            [channel_id, OutboxState.UNCERTAIN.value, now, OutboxState.SENDING.value],
        )


async def release(channel_id: int, kind: str, owner: str, last_run: int, now: datetime) -> None:
    """Give the lease back; the sync runs made under it record ``owner`` as their daemon.

    Nothing of ours runs in the channel once we let go: a run still ``running`` or mail
    still ``sending`` was cut short (a stop's deadline cancelled it) and is repaired now,
    as a dead daemon's would be (``now``, the clock, dates it)."""
    async with in_transaction() as tx:
        ours = await tx.execute_query_dict(
            "UPDATE lease SET lease_owner = '', lease_until = NULL "
            "WHERE channel_id = $1 AND kind = $2 AND lease_owner = $3 RETURNING id",
            [channel_id, kind, owner],
        )
        if not ours:
            return  # taken over meanwhile (we stalled past lease_until): the new holder repaired
        if kind == SYNC:
            await tx.execute_query(
                "UPDATE sync_run SET daemon_id = $3 WHERE channel_id = $1 AND id > $2 AND daemon_id = ''",
                [channel_id, last_run, owner],
            )
        await _repair(tx, channel_id, kind, owner, now)


async def stop(daemon_id: str) -> None:
    """A clean stop: every lease given back, the daemon marked stopped."""
    async with in_transaction() as tx:
        await tx.execute_query(
            "UPDATE lease SET lease_owner = '', lease_until = NULL WHERE lease_owner = $1",
            [daemon_id],
        )
        await tx.execute_query(
            "UPDATE daemon SET stopped_at = now(), heartbeat = now() WHERE id = $1", [daemon_id]
        )


async def daemons(recent_hours: float = 24) -> list[dict[str, Any]]:
    """The daemons seen in the last ``recent_hours`` with the leases they hold (status)."""
    conn = _conn()
    rows = await conn.execute_query_dict(
        "SELECT id, host, pid, started_at, heartbeat, stopped_at "
        "FROM daemon WHERE heartbeat > now() - make_interval(hours => $1) ORDER BY started_at, id",
        [int(recent_hours)],
    )
    leases = await conn.execute_query_dict(
        "SELECT lease_owner, channel_id, kind, lease_until, lease_until < now() AS expired FROM lease "
        "WHERE lease_owner <> '' ORDER BY channel_id, kind"
    )
    out = []
    for r in rows:
        held = [
            {
                "channel": x["channel_id"],
                "kind": x["kind"],
                "until": x["lease_until"],
                "expired": x["expired"],
            }
            for x in leases
            if x["lease_owner"] == r["id"]
        ]
        out.append(
            {
                "id": r["id"],
                "host": r["host"],
                "pid": r["pid"],
                "started_at": r["started_at"],
                "last_seen": r["heartbeat"],
                "stopped": r["stopped_at"] is not None,
                "leases": held,
            }
        )
    return out


async def holder(channel_id: int, kind: str) -> tuple[str, datetime | None]:
    rows = await _conn().execute_query_dict(
        "SELECT lease_owner, lease_until FROM lease WHERE channel_id = $1 AND kind = $2 AND lease_owner <> ''",
        [channel_id, kind],
    )
    return (rows[0]["lease_owner"], rows[0]["lease_until"]) if rows else ("", None)
