"""The simulator as one request handler: the Sell API v2 surface plus the ``/_sim/`` control API.

Owns routing, the order of the checks every Sell request goes through (method case, faults,
headers, token, rate limit), the JSON bodies in and out, and the ASGI adapter. State lives in
``store.World``; decisions about values live in ``validate``; faults and limits in their
modules. ``Simulator.handle`` is synchronous and transport-neutral, so the hand-written HTTP
server (``server``) and any ASGI server run the same code.
"""

from __future__ import annotations

import base64
import email.utils
import json
import math
import os
import time
from typing import Any
from urllib.parse import urlencode

from . import envelope as env
from . import validate as v
from .envelope import ApiError, Request, Response
from .faults import Faults
from .limits import Counters, RateLimiter
from .options import Options, make_options
from .store import Account, Token, World

_5XX = {
    "500": ("server_error", "Internal Server Error"),
    "502": ("bad_gateway", "Bad Gateway"),
    "503": ("temporarily_unavailable", "Service Unavailable"),
    "504": ("gateway_timeout", "Gateway Timeout"),
}
_TYPES = {"lead": "lead", "leads": "lead", "contact": "contact", "contacts": "contact"}
_MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


def _sync_route(method: str, rest: list[str]) -> str | None:
    if rest == ["sync", "start"] and method == "POST":
        return "start"
    if rest == ["sync", "ack"] and method == "POST":
        return "ack"
    if len(rest) == 4 and rest[2] == "queues" and rest[3] == "main" and method == "GET":
        return "{session}/queues/main"
    return None


class ConnectionDropped(Exception):
    """Raised by the ASGI adapter for a "drop" fault, so the server aborts the connection."""


def _int_id(raw: str) -> int:
    if not raw.isdigit():
        raise env.not_found()
    return int(raw)


class Simulator:
    """One simulated Sell service (any number of accounts and tokens)."""

    def __init__(
        self,
        seed: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        state_path: str | None = None,
    ) -> None:
        if seed is not None and not isinstance(seed, dict):
            raise ValueError("a seed is a JSON object")
        seed_options = (seed or {}).get("options", {})
        if not isinstance(seed_options, dict):
            raise ValueError('a seed\'s "options" is a JSON object')
        self.base_options = dict(seed_options, **(options or {}))
        self.options: Options = make_options(self.base_options)
        self.world = World(self.options)
        self.faults = Faults()
        self.limiter = RateLimiter(self.options)
        self.counters = Counters()
        self.seed: dict[str, Any] = seed if seed is not None else {"accounts": []}
        self.state_path = state_path
        self.dirty = False
        self._last_route: str | None = None
        if state_path and os.path.exists(state_path):
            try:
                with open(state_path, encoding="utf-8") as f:
                    state = json.load(f)
            except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
                raise ValueError(f"state file {state_path}: not valid JSON ({e})") from None
            try:
                self.world.restore(state)
            except ValueError as e:
                raise ValueError(f"state file {state_path}: {e}") from None
        else:
            self.world.load_seed(self.seed)

    # --- persistence ------------------------------------------------------------------------
    def save_if_dirty(self) -> None:
        if not (self.state_path and self.dirty):
            return
        tmp = self.state_path + ".tmp"
        # 0600 whatever the umask or a crashed save's leftover: the state holds Sell tokens.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            json.dump(self.world.dump(), f)
        os.replace(tmp, self.state_path)
        self.dirty = False  # only once written: a failed save is retried

    # --- entry point ------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        rid = env.new_request_id()
        if req.path.startswith("/_sim/") or req.path == "/_sim":
            try:
                resp = self._control(req)
            except ApiError as e:
                resp = env.render(e, rid)
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                resp = env.render(
                    ApiError(400, "invalid_control", "bad control request", str(e)), rid
                )
        else:
            resp = self._sell(req, rid)
            self.counters.statuses[resp.status] += 1
            if req.method in _MUTATING and resp.status < 300:
                self.dirty = True
        resp.request_id = rid
        # Sell's clock, as every origin server sends it (RFC 9110 §6.6.1): the same clock
        # as the records' updated_at, so a poller can tell which second it listed at.
        resp.headers = [
            *resp.headers,
            (b"date", email.utils.formatdate(self.world.clock.now(), usegmt=True).encode()),
        ]
        return resp

    # --- the Sell API -----------------------------------------------------------------------
    def _sell(self, req: Request, rid: str) -> Response:
        o = self.options
        method, path = req.method, req.path
        self.counters.request(method, path)
        now = time.monotonic()
        token, token_error = self._token(req)
        if token is not None:
            self.counters.token_hit(token.name, time.time())

        if method != method.upper() and o.reject_lowercase_method:
            return env.html_error(400)

        # The limiter sits in front of everything else (like a gateway would): by default
        # every request carrying a valid token uses budget, whatever its answer turns out to be.
        clock = self.world.clock.now()
        if (
            token is not None
            and o.rate_count_all
            and not self.limiter.allow(token.token, now, clock)
        ):
            self.counters.limited(token.name)
            return self._too_many(rid)

        delay = 0.0
        drop_after = False
        rule = self.faults.pick(method, path)
        if rule is not None:
            self.counters.faults[rule.kind] += 1
            if rule.kind == "slow":
                delay = rule.delay
            elif rule.kind == "drop":
                return Response(0, drop=True)
            elif rule.kind == "drop_after":
                drop_after = True
            elif rule.kind == "html":
                return env.html_error(rule.status)
            elif rule.kind == "429":
                return self._too_many(rid)
            else:
                code, phrase = _5XX[rule.kind]
                return env.render(ApiError(int(rule.kind), code, phrase, phrase), rid)

        try:
            if o.require_user_agent and not req.headers.get("user-agent"):
                raise ApiError(
                    400,
                    "invalid_user_agent",
                    "invalid user agent",
                    "The User-Agent header is missing or invalid.",
                )
            accept = req.headers.get("accept")
            if accept and not any(
                a.split(";")[0].strip() in {"application/json", "*/*", "application/*"}
                for a in accept.split(",")
            ):
                raise ApiError(
                    406, "not_acceptable", "Not Acceptable", "Only application/json is available."
                )
            if token is None:
                raise token_error or env.unauthorized()
            if not o.rate_count_all and not self.limiter.allow(token.token, now, clock):
                self.counters.limited(token.name)
                return self._too_many(rid)
            resp = self._route(req, token, self.world.accounts[token.account_id])
        except ApiError as e:
            resp = env.render(e, rid)
        if method.upper() == "HEAD":
            resp.body = b""
        resp.delay = delay
        resp.drop = drop_after
        return resp

    def _token(self, req: Request) -> tuple[Token | None, ApiError | None]:
        auth = req.headers.get("authorization")
        if not auth:
            return None, None
        scheme, _, value = auth.partition(" ")
        if scheme != "Bearer" and (
            self.options.reject_lowercase_bearer or scheme.lower() != "bearer"
        ):
            return None, env.unauthorized()
        token = self.world.tokens.get(value)  # exactly one space, no padding
        return token, None if token else env.unauthorized()

    def _too_many(self, rid: str) -> Response:
        o = self.options
        if o.rate_limit_body == "json":
            resp = env.render(
                ApiError(
                    429,
                    "rate_limit_exceeded",
                    "Too Many Requests",
                    "The rate limit of this access token has been exceeded.",
                ),
                rid,
            )
        elif o.rate_limit_body == "text":
            resp = Response(429, b"Too Many Requests\n", content_type=b"text/plain; charset=utf-8")
        else:
            resp = env.empty(429)
        if o.rate_limit_headers:
            retry = 1
            if o.rate_window == "hourly_lockout":  # until the clock hour turns
                retry = 3600 - self.world.clock.now() % 3600
            resp.headers += [
                (b"retry-after", str(retry).encode()),
                (b"x-ratelimit-limit", str(int(o.rate_per_second)).encode()),
                (b"x-ratelimit-remaining", b"0"),
            ]
        return resp

    def _route(self, req: Request, token: Token, acc: Account) -> Response:
        method = req.method.upper()
        if method == "HEAD":
            method = "GET"
        parts = req.path.rstrip("/").split("/")[1:]
        if not parts or parts[0] != "v2":
            raise env.not_found()
        rest = parts[1:]
        n = len(rest)
        try:
            return self._dispatch(req, token, acc, method, rest, n)
        finally:  # counted even when the handler answers with an error
            if self._last_route is not None:
                self.counters.route(method, self._last_route)

    def _mark(self, rest: list[str], route: str) -> None:
        suffix = "" if route in ("list", "create") else "/" + route
        self._last_route = "/v2/" + rest[0] + suffix

    def _dispatch(
        self, req: Request, token: Token, acc: Account, method: str, rest: list[str], n: int
    ) -> Response:
        route = None
        self._last_route = None
        if n == 1 and rest[0] in ("leads", "contacts"):
            resource = _TYPES[rest[0]]
            if method == "GET":
                route = "list"
                self._mark(rest, route)
                resp = self._list(req, acc, resource)
            elif method == "POST":
                route = "create"
                self._mark(rest, route)
                self._no_query(req)
                attrs = self._body(req)
                rec = self.world.create_record(acc, resource, attrs, token.user_id)
                resp = env.one(
                    resource, self.world.view(acc, resource, rec), self.options.create_status
                )
        elif n == 2 and rest[0] in ("leads", "contacts"):
            resource = _TYPES[rest[0]]
            rid = _int_id(rest[1])
            route = "{id}"
            self._mark(rest, route)
            self._no_query(req)
            if method == "GET":
                rec = self.world.get_record(acc, resource, rid)
                resp = env.one(resource, self.world.view(acc, resource, rec))
            elif method == "PUT":
                attrs = self._body(req)
                self.world.get_record(acc, resource, rid)
                rec = self.world.update_record(acc, resource, rid, attrs)
                resp = env.one(resource, self.world.view(acc, resource, rec))
            elif method == "DELETE":
                self.world.delete_record(acc, resource, rid)
                resp = env.empty(204)
            else:
                route = None
        elif n == 2 and rest[1] == "custom_fields" and rest[0] in ("lead", "contact", "deal"):
            if method == "GET":
                route = "custom_fields"
                self._mark(rest, route)
                resp = self._custom_fields(req, acc, rest[0])
        elif n == 1 and rest[0] == "lead_conversions":
            if method == "GET":
                route = "list"
                self._mark(rest, route)
                resp = self._list_conversions(req, acc)
            elif method == "POST":
                route = "create"
                self._mark(rest, route)
                resp = self._convert(req, acc, token)
        elif n == 2 and rest[0] == "users" and rest[1] == "self" and method == "GET":
            route = "self"
            self._mark(rest, route)
            self._no_query(req)
            resp = env.one("user", acc.users[token.user_id])
        elif n == 2 and rest[0] == "accounts" and rest[1] == "self" and method == "GET":
            route = "self"
            self._mark(rest, route)
            self._no_query(req)
            resp = env.one("account", acc.as_dict())
        elif n == 1 and rest[0] in ("lead_statuses", "lead_sources") and method == "GET":
            route = "list"
            self._mark(rest, route)
            resp = self._simple_list(req, acc, rest[0])
        elif n >= 2 and rest[0] == "sync":
            route = _sync_route(method, rest)
            if route is not None:
                self._last_route = "/v2/sync/" + route
                resp = self._sync(req, acc, token, route, rest)
        if route is None:
            raise env.not_found()
        return resp

    # --- helpers ----------------------------------------------------------------------------
    def _no_query(self, req: Request) -> None:
        for name, _ in req.query:
            raise env.invalid_param(name, "unknown parameter")

    def _json(self, req: Request) -> Any:
        if not req.body:
            raise env.invalid_payload("The request body is empty.")
        try:
            return json.loads(req.body)
        except (ValueError, UnicodeDecodeError):
            raise env.invalid_payload("The request body is not valid JSON.") from None

    def _body(self, req: Request) -> Any:
        payload = self._json(req)
        if not isinstance(payload, dict) or "data" not in payload:
            raise env.invalid_payload('The request body must be wrapped as {"data": {...}}.')
        extra = set(payload) - {"data", "meta"}
        if extra:
            raise env.invalid_payload(f"Unexpected top-level keys {sorted(extra)}.")
        return payload["data"]

    def _links(
        self, req: Request, params: dict[str, Any], page: int, has_next: bool, count: int
    ) -> dict[str, str]:
        if count == 0 and page == 1:
            return {}
        base = f"http://{req.host}{req.path}?"

        def at(p: int) -> str:
            return base + urlencode({**params, "page": p})

        links = {"self": at(page), "first_page": at(1)}
        if page > 1:
            links["prev_page"] = at(page - 1)
        if has_next:
            links["next_page"] = at(page + 1)
        return links

    def _list(self, req: Request, acc: Account, resource: str) -> Response:
        params = req.query
        q = v.parse_list_query(resource, params)
        records, has_next = self.world.list_records(acc, resource, q)
        keep = {k: x for k, x in params if k != "page"}
        keep["per_page"] = str(q.per_page)
        versions = [{"version": acc.versions.get((resource, r["id"]), 1)} for r in records]
        shown = [self.world.view(acc, resource, r) for r in records]
        links = self._links(req, keep, q.page, has_next, len(records))
        return env.collection(resource, shown, links, versions)

    def _simple_list(self, req: Request, acc: Account, what: str) -> Response:
        q = v.ListQuery()
        for name, raw in req.query:
            if name == "page":
                q.page = v.parse_int_param(name, raw, 1, None)
            elif name == "per_page":
                q.per_page = v.parse_int_param(name, raw, 1, 100)
            else:
                raise env.invalid_param(name, "unknown parameter")
        items = acc.lead_statuses if what == "lead_statuses" else []
        start = (q.page - 1) * q.per_page
        page = items[start : start + q.per_page]
        type_ = "lead_status" if what == "lead_statuses" else "lead_source"
        links = self._links(
            req, {"per_page": q.per_page}, q.page, len(items) > start + q.per_page, len(page)
        )
        return env.collection(type_, page, links)

    def _custom_fields(self, req: Request, acc: Account, resource: str) -> Response:
        self._no_query(req)
        keys = self.options.custom_field_keys
        out = []
        for d in acc.definitions.get(resource, []):
            item = {k: x for k, x in d.items() if k != "filterable"}
            if keys != "current":  # the old names ZAP's fetch.ts reads
                item["options"] = item["choices"]
                if "for_company" in item:
                    item["for_organisation"] = item["for_company"]
            if keys == "legacy":
                del item["choices"]
                item.pop("for_company", None)
            out.append(item)
        return env.collection("custom_field", out, {})

    # --- lead conversions -------------------------------------------------------------------
    def _convert(self, req: Request, acc: Account, token: Token) -> Response:
        self._no_query(req)
        data = self._body(req)
        prefix = self.options.field_pointer_prefix
        if not isinstance(data, dict):
            raise env.invalid_payload("data must be an object")
        errors = []
        for key in data:
            if key not in {"lead_id", "create_deal", "owner_id"}:
                ptr = v.pointer(prefix, key)
                errors.append(
                    ApiError(
                        422,
                        "unknown",
                        "unknown attribute",
                        f"The attribute '{ptr}' is not a known attribute for the "
                        "'lead_conversion' resource.",
                        "lead_conversion",
                        ptr,
                    )
                )
        lead_id = data.get("lead_id")
        if "lead_id" not in data:
            errors.append(
                ApiError(
                    422,
                    "missing",
                    "attribute is missing",
                    "lead_id is required",
                    "lead_conversion",
                    v.pointer(prefix, "lead_id"),
                )
            )
        elif isinstance(lead_id, bool) or not isinstance(lead_id, int):
            errors.append(
                ApiError(
                    422,
                    "invalid_type",
                    "attribute has an invalid type",
                    "expected an integer",
                    "lead_conversion",
                    v.pointer(prefix, "lead_id"),
                )
            )
        if "create_deal" in data and not isinstance(data["create_deal"], bool):
            errors.append(
                ApiError(
                    422,
                    "invalid_type",
                    "attribute has an invalid type",
                    "expected a boolean",
                    "lead_conversion",
                    v.pointer(prefix, "create_deal"),
                )
            )
        if (
            "owner_id" in data
            and data["owner_id"] is not None
            and (isinstance(data["owner_id"], bool) or not isinstance(data["owner_id"], int))
        ):
            errors.append(
                ApiError(
                    422,
                    "invalid_type",
                    "attribute has an invalid type",
                    "expected an integer",
                    "lead_conversion",
                    v.pointer(prefix, "owner_id"),
                )
            )
        if errors:
            errors[0].more = errors[1:]
            raise errors[0]
        create_deal = data.get("create_deal", self.options.conversion_create_deal)
        # lead_id was checked above (an int).
        conv = self.world.convert_lead(
            acc,
            lead_id,  # type: ignore[arg-type]
            token.user_id,
            create_deal=create_deal,
            owner_id=data.get("owner_id"),
        )
        return env.one("lead_conversion", dict(conv), self.options.conversion_status)

    def _list_conversions(self, req: Request, acc: Account) -> Response:
        page, per_page, cursor = None, 25, None
        filters: dict[str, int] = {}
        seen: set[str] = set()
        for name, raw in req.query:
            if name in seen:
                raise env.invalid_param(name, "given more than once")
            seen.add(name)
            if name == "page":
                page = v.parse_int_param(name, raw, 1, 50)
            elif name == "per_page":
                per_page = v.parse_int_param(name, raw, 1, 200)
            elif name == "cursor":
                try:
                    cursor = int(
                        base64.urlsafe_b64decode(raw.encode()).decode().removeprefix("id:")
                    )
                except ValueError:
                    raise env.invalid_param(name, "malformed cursor") from None
            elif name in {"lead_id", "individual_id", "organization_id", "deal_id"}:
                filters[name] = v.parse_int_param(name, raw, 1, None)
            else:
                raise env.invalid_param(name, "unknown parameter")
        if page is not None and cursor is not None:
            raise env.invalid_param("cursor", "cannot be combined with page")
        rows = sorted(
            (c for c in acc.conversions if all(c[k] == x for k, x in filters.items())),
            key=lambda c: -c["id"],
        )
        if cursor is not None:
            rows = [c for c in rows if c["id"] < cursor]
            start = 0
        else:
            start = ((page or 1) - 1) * per_page
        chunk = rows[start : start + per_page]
        links: dict[str, str] = {}
        if chunk:
            base = f"http://{req.host}{req.path}?"
            keep = {**{k: str(x) for k, x in filters.items()}, "per_page": per_page}
            here = (
                {"page": page or 1}
                if cursor is None
                else {"cursor": base64.urlsafe_b64encode(f"id:{cursor}".encode()).decode()}
            )
            links["self"] = base + urlencode({**keep, **here})
            if len(rows) > start + per_page:
                nxt = base64.urlsafe_b64encode(f"id:{chunk[-1]['id']}".encode()).decode()
                links["next_page"] = base + urlencode({**keep, "cursor": nxt})
        return env.collection("lead_conversion", [dict(c) for c in chunk], links)

    # --- Sync API ---------------------------------------------------------------------------
    def _sync(
        self, req: Request, acc: Account, token: Token, route: str, rest: list[str]
    ) -> Response:
        self._no_query(req)
        if not acc.sync_api:
            raise ApiError(
                403,
                "forbidden",
                "Forbidden",
                "The Sync API is not available on this account's plan.",
            )
        if "sync" not in token.scopes:
            raise ApiError(
                403, "insufficient_scope", "Forbidden", "The access token lacks the 'sync' scope."
            )
        device = req.headers.get("x-basecrm-device-uuid", "").strip()
        if not device:
            raise ApiError(
                400,
                "invalid_header",
                "invalid request header",
                "The X-Basecrm-Device-UUID header is missing.",
            )
        if route == "start":
            session = self.world.sync_start(acc, device)
            if session is None:
                return env.empty(204)
            total = len(session.queue)
            return env.one(
                "sync_session",
                {
                    "id": session.id,
                    "queues": [
                        {
                            "data": {
                                "name": "main",
                                "pages": max(1, math.ceil(total / self.options.sync_page_size)),
                                "total_count": total,
                            },
                            "meta": {
                                "type": "sync_queue",
                                "links": {
                                    "self": f"http://{req.host}/v2/sync/{session.id}/queues/main"
                                },
                            },
                        }
                    ],
                },
                201,
            )
        if route == "ack":
            payload = self._json(req)
            if isinstance(payload, dict) and isinstance(payload.get("data"), dict):
                payload = payload["data"]
            keys = payload.get("ack_keys") if isinstance(payload, dict) else None
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise env.invalid_payload('Expected {"data": {"ack_keys": ["..."]}}.')
            self.world.sync_ack(acc, device, keys)
            return env.empty(202)
        page = self.world.sync_fetch(acc, device, rest[1])
        if page is None:
            return env.empty(204)
        items, left = page
        return env.json_response(
            200,
            {
                "items": items,
                "meta": {
                    "type": "collection",
                    "count": len(items),
                    "count_left": left,
                    "failed_objects": [],
                },
            },
        )

    # --- control API ------------------------------------------------------------------------
    def _control(self, req: Request) -> Response:
        from .control import control

        return control(self, req)

    def reset(self, empty: bool = False) -> None:
        self.options.__dict__.update(make_options(self.base_options).__dict__)
        self.world.clock.offset = 0.0
        self.faults.clear()
        self.counters.reset()
        self.limiter.reset()
        self.world.next_id = 1000
        self.world.load_seed({"accounts": []} if empty else self.seed)
        self.dirty = True

    # --- ASGI -------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self.save_if_dirty()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): x.decode("latin-1") for k, x in scope["headers"]}
        req = Request(
            method=scope["method"],
            path=scope["path"],
            query_string=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
            host=headers.get("host", "127.0.0.1"),
        )
        resp = self.handle(req)
        if resp.delay:
            import asyncio

            await asyncio.sleep(resp.delay)
        if resp.drop:
            raise ConnectionDropped("fault: drop")
        await send(
            {
                "type": "http.response.start",
                "status": resp.status,
                "headers": response_headers(resp),
            }
        )
        await send({"type": "http.response.body", "body": resp.body})


def response_headers(resp: Response) -> list[tuple[bytes, bytes]]:
    out = [
        (b"x-request-id", resp.request_id.encode()),
        (b"content-language", b"en"),
        (b"vary", b"Accept-Language"),
    ]
    if resp.content_type and resp.status not in (204, 304):
        out.append((b"content-type", resp.content_type))
    out.extend(resp.headers)
    return out
