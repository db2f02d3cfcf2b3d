"""Typed results rendered as the protocol's JSON documents (and nothing else).

The store and the capabilities return dataclasses; the shapes the admins, ``kuloo-ctl``
and the TUI see are decided here, in one place. Imports the store's result types and
the base modules.
"""

from __future__ import annotations

from typing import Any

from ..clock import Clock, iso
from ..store.channels import Channel


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


def clock(c: Clock) -> dict[str, Any]:
    return {"mode": c.mode, "now": iso(c.now())}


def event(name: str, data: Any) -> Any:
    """An event's data as it goes on the wire: typed results rendered, plain data as is."""
    if isinstance(data, Channel):
        return channel(data)
    return data
