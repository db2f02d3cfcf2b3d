"""Typed results rendered as the protocol's JSON documents (and nothing else).

The store and the capabilities return dataclasses; the shapes the admins, ``kuloo-ctl``
and the TUI see are decided here, in one place. Imports the store's result types and
the base modules.
"""

from __future__ import annotations

from typing import Any

from ..clock import Clock, iso
from ..store.bounces import Deliverability
from ..store.channels import Channel
from ..store.delivery import ArticleSummary, OutboxEntry
from ..store.sync.types import ErrorDoc, RunDoc
from ..store.users import AuditRecord, User


def channel(doc: Channel) -> dict[str, Any]:
    return {
        "id": doc.id,
        "name": doc.name,
        "plan": doc.plan.value,
        "add_all_users_to_crm": doc.add_all_users_to_crm,
        "sequential_tags": list(doc.sequential_tags),
        "sender": doc.sender,
        "postal_address": doc.postal_address,
        "api_token": doc.api_token,
        "connection": {
            "status": doc.connection.status.value,
            "problems": list(doc.connection.problems),
            "verified_at": iso(doc.connection.verified_at),
            "checked_at": iso(doc.connection.checked_at),
        },
        "sync": {"status": doc.sync_status, "last_sync_at": iso(doc.last_sync_at)},
        "created_at": iso(doc.created_at),
        "updated_at": iso(doc.updated_at),
    }


def sync_run(doc: RunDoc) -> dict[str, Any]:
    return {
        "id": doc.id,
        "channel": doc.channel_id,
        "status": doc.status.value,
        "reason": doc.reason,
        "error": doc.error,
        "started_at": iso(doc.started_at),
        "finished_at": iso(doc.finished_at),
        "counts": dict(doc.counts),
        "daemon": doc.daemon_id or None,  # PostgreSQL: the daemon that ran it
        "retry_at": iso(doc.retry_at),  # rate_limited: when Sell takes requests again
    }


def daemon(d: dict[str, Any]) -> dict[str, Any]:
    """One daemon seen on the PostgreSQL store (``store.leases.daemons``), for ``status``."""
    return {
        "id": d["id"],
        "host": d["host"],
        "pid": d["pid"],
        "started_at": iso(d["started_at"]),
        "last_seen": iso(d["last_seen"]),
        "stopped": d["stopped"],
        "leases": [
            {
                "channel": x["channel"],
                "kind": x["kind"],
                "until": iso(x["until"]),
                "expired": x["expired"],
            }
            for x in d["leases"]
        ],
    }


def sync_error(doc: ErrorDoc) -> dict[str, Any]:
    return {
        "id": doc.id,
        "user": doc.user_id,
        "crm": {"kind": doc.crm_kind, "id": doc.crm_id} if doc.crm_kind else None,
        "email": doc.email,
        "code": doc.code,
        "error": doc.error,
        "at": iso(doc.updated_at),
    }


def user(doc: User) -> dict[str, Any]:
    return {
        "id": doc.id,
        "channel": doc.channel_id,
        "kuloo_id": doc.kuloo_id,
        "email": doc.email,
        "first_name": doc.first_name,
        "last_name": doc.last_name,
        "source": doc.source.value,
        "frequency": doc.frequency.value,
        "unsubscribed": doc.unsubscribed,
        "add_to_crm": doc.add_to_crm,
        "promo_tags": list(doc.promo_tags),
        "last_active": iso(doc.last_active),
        "crm": {"kind": doc.crm.kind.value, "id": doc.crm.id} if doc.crm else None,
        "sync_error": doc.sync_error,
        # The address bounced (no email of any kind until cleared or the email changes).
        "bounce": {
            "status": doc.bounce.status,
            "reason": doc.bounce.reason,
            "at": iso(doc.bounce.at),
        }
        if doc.bounce
        else None,
        "created_at": iso(doc.created_at),
        "updated_at": iso(doc.updated_at),
    }


def deliverability(d: Deliverability) -> dict[str, Any]:
    """``channels.get``'s ``deliverability``: the last 30 days' emails sent, hard bounces,
    complaints and their rates (fractions: 0.02 is 2 %)."""
    return d.as_dict()


def audit_entry(entry: AuditRecord) -> dict[str, Any]:
    return {
        "at": iso(entry.at),
        "actor": entry.actor,
        "field": entry.field,
        "old": entry.old,
        "new": entry.new,
        "note": entry.note,
    }


def clock(c: Clock) -> dict[str, Any]:
    return {"mode": c.mode, "now": iso(c.now())}


def event(name: str, data: Any) -> Any:
    """An event's data as it goes on the wire: typed results rendered, plain data as is."""
    if isinstance(data, Channel):
        return channel(data)
    if isinstance(data, RunDoc):
        return sync_run(data)
    if isinstance(data, User):
        return user(data)
    return data


def article(a: ArticleSummary) -> dict[str, Any]:
    return {
        "id": a.id,
        "channel": a.channel,
        "key": a.key,
        "file": a.source_file,
        "title": a.title,
        "format": a.format,
        "url": a.url,
        "tags": list(a.tags),
        "published_at": iso(a.published_at),
        "delay_seconds": a.delay_seconds,
        "version": a.version,
        "withdrawn_at": iso(a.withdrawn_at),
        "kind": "sequence" if a.tags else "newsletter",
    }


def outbox_entry(e: OutboxEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "channel": e.channel,
        "user": e.user,
        "email": e.email,
        "kind": e.kind,
        "article": e.article,
        "articles": list(e.articles),
        "state": e.state.value,
        "message_id": e.message_id,
        "attempts": e.attempts,
        "last_error": e.last_error,
        "created_at": iso(e.created_at),
        "sent_at": iso(e.sent_at),
        "next_attempt_at": iso(e.next_attempt_at),
    }
