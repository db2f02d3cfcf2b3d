"""The ``/_sim/`` control API: what tests, benchmarks and the demo do *to* the simulator.

Owns reset, seeding, options, faults, counters, the clock, plan switches, and the "web UI"
actions a Sell user would take (create, edit, convert, delete records; edit custom field
definitions), with ``updated_at`` and revisions moving as they do for API writes. No token is
needed; bodies are plain JSON (no ``data`` envelope). See README "Control API".
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from . import envelope as env
from .envelope import Request, Response
from .options import make_options
from .store import merge_rule

if TYPE_CHECKING:
    from .app import Simulator

_TYPES = {"lead": "lead", "leads": "lead", "contact": "contact", "contacts": "contact"}


def _payload(req: Request) -> Any:
    if not req.body.strip():
        return {}
    try:
        return json.loads(req.body)
    except ValueError:
        raise ValueError("the control request body is not valid JSON") from None


def _ok(payload: Any, status: int = 200) -> Response:
    return env.json_response(status, payload)


def control(sim: Simulator, req: Request) -> Response:
    method = req.method.upper()
    parts = req.path.rstrip("/").split("/")[2:]
    query = {k: x[-1] for k, x in parse_qs(req.query_string).items()}
    world = sim.world
    head = parts[0] if parts else ""

    if head == "reset" and method == "POST":
        sim.reset(empty=bool(_payload(req).get("empty", False)))
        return _ok({"reset": True})
    if head == "seed" and method in ("POST", "PUT"):
        seed = _payload(req)
        if isinstance(seed, dict) and "options" in seed:  # validate before changing anything
            make_options({**sim.options.as_dict(), **seed["options"]})
        world.load_seed(seed)  # validates too, before replacing the reset seed
        sim.seed = seed
        if "options" in seed:
            sim.options.update(seed["options"])
        sim.dirty = True
        return _ok({"accounts": list(world.accounts), "tokens": len(world.tokens)})
    if head == "state" and method == "GET":
        return _ok(world.dump())
    if head == "options":
        if method in ("POST", "PATCH", "PUT"):
            sim.options.update(_payload(req))
        return _ok(sim.options.as_dict())
    if head == "faults":
        if method in ("POST", "PUT"):
            sim.faults.set(_payload(req))
        elif method == "DELETE":
            sim.faults.clear()
        return _ok({"rules": [r.as_dict() for r in sim.faults.rules]})
    if head == "counters":
        if method == "DELETE":
            sim.counters.reset()
        return _ok(sim.counters.as_dict())
    if head == "clock":
        if method == "POST":
            body = _payload(req)
            if "advance" in body:
                world.clock.offset += float(body["advance"])
            if "offset" in body:
                world.clock.offset = float(body["offset"])
            sim.dirty = True  # the offset is part of the saved state
        return _ok({"now": world.now_iso(), "offset": world.clock.offset})
    if head == "accounts":
        if len(parts) == 1 and method == "GET":
            return _ok([_account_view(sim, a) for a in world.accounts.values()])
        if len(parts) == 2 and method in ("PATCH", "POST", "PUT"):
            acc = world.accounts.get(int(parts[1]))
            if acc is None:
                raise env.not_found("no such account")
            body = _payload(req)
            unknown = set(body) - {"sync_api", "name", "conversion_merge"}
            if unknown:
                raise ValueError(f"unknown account settings {sorted(unknown)}")
            if "conversion_merge" in body:  # null: back to the option
                acc.conversion_merge = merge_rule(body["conversion_merge"])
            if "sync_api" in body:
                acc.sync_api = bool(body["sync_api"])
            if "name" in body:
                acc.name = str(body["name"])
            sim.dirty = True
            return _ok(_account_view(sim, acc))
    if head == "web" and method in ("GET", "HEAD"):
        return _record_page(sim, parts[1:], query)
    if head == "ui":
        resp = _ui(sim, req, method, parts[1:], query)
        sim.dirty = True
        return resp
    raise env.not_found("Unknown control endpoint; see sellsim/README.md.")


_WEB_PATHS = {("leads",): "lead", ("crm", "contacts"): "contact"}


def _record_page(sim: Simulator, parts: list[str], query: dict[str, str]) -> Response:
    """``GET /_sim/web/leads/{id}`` or ``/_sim/web/crm/contacts/{id}``: a minimal page for a
    record, where the Sell web app has its own (the demo's ``[sell] web_url``)."""
    kind = _WEB_PATHS.get(tuple(parts[:-1]))
    if kind is None or not parts or not parts[-1].isdigit():
        return env.html_error(404)
    record_id = int(parts[-1])
    for acc in sim.world.accounts.values():
        record = acc.records.get(kind, {}).get(record_id)
        if record is not None:
            break
    else:
        return env.html_error(404)
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
        for k, v in sorted(record.items())
    )
    title = html.escape(f"{kind} {record_id} — {acc.name} (sellsim)")
    body = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title></head>'
        f"<body><h1>{title}</h1><table>{rows}</table></body></html>"
    )
    return Response(200, body.encode(), content_type=b"text/html; charset=utf-8")


def _account_view(sim: Simulator, acc: Any) -> dict[str, Any]:
    return {
        "id": acc.id,
        "name": acc.name,
        "sync_api": acc.sync_api,
        "conversion_merge": acc.conversion_merge,
        "users": list(acc.users),
        "tokens": [
            {"name": t.name, "token": t.token, "user": t.user_id, "scopes": list(t.scopes)}
            for t in sim.world.tokens.values()
            if t.account_id == acc.id
        ],
        "counts": {t: len(rs) for t, rs in acc.records.items()},
        "revision": acc.revision,
        "devices": len(acc.devices),
    }


def _ui(
    sim: Simulator, req: Request, method: str, parts: list[str], query: dict[str, str]
) -> Response:
    world = sim.world
    if "account" in query:
        acc = world.accounts.get(int(query["account"]))
    else:
        acc = next(iter(world.accounts.values()), None)
    if acc is None:
        raise env.not_found("no such account")
    user_id = next(iter(acc.users))
    check = query.get("force", "") not in ("1", "true")

    if parts and parts[0] == "custom_fields" and len(parts) >= 2:
        resource = _TYPES.get(parts[1])
        if resource is None:
            raise env.not_found("custom fields exist for lead and contact")
        if len(parts) == 2 and method == "POST":
            return _ok(world.add_definition(acc, resource, _payload(req)), 201)
        if len(parts) == 3 and method in ("PUT", "PATCH"):
            return _ok(world.update_definition(acc, resource, int(parts[2]), _payload(req)))
        if len(parts) == 3 and method == "DELETE":
            world.delete_definition(acc, resource, int(parts[2]))
            return env.empty(204)
        raise env.not_found()

    if not parts or parts[0] not in _TYPES:
        raise env.not_found("ui actions: /_sim/ui/{lead|contact}[/{id}[/convert]]")
    resource = _TYPES[parts[0]]
    if len(parts) == 1 and method == "POST":
        rec = world.create_record(acc, resource, _payload(req), user_id, check=check)
        return _ok(rec, 201)
    if len(parts) == 2 and method in ("PUT", "PATCH"):
        rec = world.update_record(acc, resource, int(parts[1]), _payload(req), check=check)
        return _ok(rec)
    if len(parts) == 2 and method == "DELETE":
        world.delete_record(acc, resource, int(parts[1]))
        return env.empty(204)
    if len(parts) == 3 and parts[2] == "convert" and method == "POST" and resource == "lead":
        body = _payload(req)
        conv = world.convert_lead(
            acc,
            int(parts[1]),
            user_id,
            create_deal=bool(body.get("create_deal", False)),
            owner_id=body.get("owner_id"),
        )
        return _ok(dict(conv), 201)
    raise env.not_found()
