"""The Zendesk Sell API v2 client: one ``httpx.AsyncClient`` per ``SellClient``, under trio.

Owns every HTTP request to Sell: headers (``Authorization: Bearer``, ``User-Agent:
kuloo-sync/<version>``, ``Accept``), the envelope (``{"data": ...}`` in and out, ``items``
collections and their paging), explicit timeouts (httpx's connect, read, write and pool
timeouts, and ``trio.move_on_after`` around each whole attempt, body included), the limits
on what a response may hold (``body``: at most ``max_response_bytes`` of decoded body, 100
headers), the shared ``RateBudget``, retries with exponential backoff and jitter, and the
mapping of failures to the typed errors of ``errors``. The ``ClientPool`` keeps one
``SellClient`` per token, so each token has its own connections and budget.

The ``httpx.AsyncClient`` trusts the environment: ``HTTPS_PROXY``/``NO_PROXY`` and
``SSL_CERT_FILE`` apply, as operators behind an egress proxy need.

Retry policy (``should_retry`` / ``retry_delay`` are pure):
- 429, 503: always retried (the request was not processed); ``Retry-After`` honoured when
  present, and a 429 defers the token's whole budget.
- 500, 502, 504, timeouts, read errors and protocol errors (a reply that is not HTTP, or
  past the limits above): retried for idempotent requests (GET, PUT, DELETE, the Sync
  API). For a create (POST a lead/contact/conversion) the write may have been applied, so
  it is *not* retried; the error carries ``maybe_applied=True`` and the caller looks the
  record up before creating it again (no duplicate CRM record).
- connect errors/timeouts (nothing was sent): always retried.
- 401, 403, 404, 422 and other 4xx: raised at once, never retried.

Logs (structlog, sync methods): one ``sell request retried`` line per retry with method,
path (no query string), status or error, attempt and delay. The token never appears in a
log line, an error message or a repr. Imports trio, httpx, structlog,
``kuloo_daemon.secrets`` and this package.
"""

from __future__ import annotations

import email.utils
import json as _json
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import httpx
import structlog
import trio

from .. import __version__
from ..clock import wall_now
from ..secrets import Secret
from . import errors as E
from .body import DEFAULT_MAX_RESPONSE_BYTES, read_capped
from .budget import RateBudget
from .records import (
    Contact,
    CustomFieldDef,
    Lead,
    LeadConversion,
    RecordFormatError,
    SyncItem,
    SyncSession,
    matches_filters,
)

log = structlog.get_logger("kuloo.crm")

USER_AGENT = f"kuloo-sync/{__version__}"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Statuses after which the server certainly did not apply the request.
UNPROCESSED_STATUSES = frozenset({429, 503})
RESOURCE_TYPES = ("lead", "contact")
R = TypeVar("R")
Person = TypeVar("Person", Lead, Contact)
# Told of every attempt (the daemon's metrics; crm imports nothing of them): the method, the
# status code or the failure ("timeout", "connect", "transport"), the seconds it waited on
# the rate budget, and whether it is retried. Never the path, the query or the token.
OnRequest = Callable[[str, str, float, bool], None]


def _ignore_request(_method: str, _status: str, _waited: float, _retried: bool) -> None:
    return None


# The fence hook (kept apart from the rest of the client): work under a lease sets it for
# its task and the tasks it starts; it is called right before every attempt of a write
# (POST, PUT, PATCH, DELETE) goes out — after the rate budget's wait and any retry's
# back-off — and raises to stop the write (``services.Leases.fence``).
write_fence: ContextVar[Callable[[], None] | None] = ContextVar(
    "kuloo_sell_write_fence", default=None
)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# ----------------------------------------------------------------------------- pure policy


def should_retry(status: int | None, failure: str | None, idempotent: bool) -> bool:
    """Whether an attempt that ended with ``status`` (or a network ``failure``:
    "connect" = nothing sent; "timeout", "transport" or "protocol" = maybe sent and
    applied, as after a 500) may be repeated."""
    if status is not None:
        if status in UNPROCESSED_STATUSES:
            return True
        return idempotent and status in RETRY_STATUSES
    if failure == "connect":
        return True
    return idempotent and failure in ("timeout", "transport", "protocol")


def retry_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    retry_after_cap: float = 120.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before attempt ``attempt + 1``: exponential with jitter in [50 %, 100 %] of
    ``min(cap, base * 2**(attempt-1))``; a server's ``Retry-After`` (up to
    ``retry_after_cap``) is a floor."""
    exp = min(cap, base * (2.0 ** max(0, attempt - 1)))
    delay = exp * (0.5 + 0.5 * rand())
    if retry_after is not None and retry_after >= 0:
        delay = max(delay, min(retry_after, retry_after_cap))
    return delay


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After``: delta-seconds or an HTTP date. None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (wall_now().timestamp() if now is None else now))


def flatten_params(filters: Mapping[str, Any]) -> dict[str, str]:
    """``{"custom_fields": {"KulooId": "k1"}, "ids": [1, 2]}`` ->
    ``{"custom_fields[KulooId]": "k1", "ids": "1,2"}``. None values are dropped."""
    out: dict[str, str] = {}

    def put(key: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, Mapping):
            for sub, inner in value.items():
                put(f"{key}[{sub}]", inner)
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, list | tuple | set | frozenset):
            out[key] = ",".join(str(v) for v in value)
        else:
            out[key] = str(value)

    for k, v in filters.items():
        put(k, v)
    return out


def next_page_params(next_page: Any) -> dict[str, str] | None:
    """The query of ``meta.links.next_page`` (we never follow its host: the token only
    goes to our base URL). None when there is no next page."""
    if not next_page or not isinstance(next_page, str):
        return None
    return dict(parse_qsl(urlsplit(next_page).query, keep_blank_values=True))


# ----------------------------------------------------------------------------- the client


class SellClient:
    """``async with SellClient(base_url, token) as sell: ...`` under trio."""

    def __init__(
        self,
        base_url: str,
        token: Secret,
        *,
        budget: RateBudget | None = None,
        timeout: float = 15.0,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        per_page: int = 100,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
        rand: Callable[[], float] = random.random,
        on_request: OnRequest = _ignore_request,
    ) -> None:
        if not isinstance(token, Secret):
            raise TypeError("token must be a Secret")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.budget = budget if budget is not None else RateBudget()
        self.timeout = float(timeout)
        self.max_attempts = max(1, int(max_attempts))
        self.backoff_base = float(backoff_base)
        self.backoff_cap = float(backoff_cap)
        self.per_page = per_page
        self.max_response_bytes = int(max_response_bytes)
        self._transport = transport
        self._rand = rand
        self._http: httpx.AsyncClient | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self.on_request = on_request
        self._extensions: dict[str, Any] = {}
        self.requests_sent = 0
        # Sell's own clock: the ``Date`` header of the last 2xx answer, unparsed (the change
        # feed reads it right after the page it belongs to, with no checkpoint between).
        self.last_date: str | None = None

    def __repr__(self) -> str:
        return f"SellClient({self.base_url!r}, token={self._token!r})"

    @property
    def token(self) -> Secret:
        return self._token

    async def __aenter__(self) -> SellClient:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        if self._http is not None:
            return
        # Each attempt as a whole is bounded by ``timeout`` (``request``); a connection (or
        # a free slot for one) must come within half of it, so that failing to connect is
        # told apart from a request that may have been sent.
        timeout = httpx.Timeout(
            connect=self.timeout / 2, read=self.timeout, write=self.timeout, pool=self.timeout / 2
        )
        # httpx's own transport (or the one a test hands in); with none given, the proxy
        # from the environment (HTTPS_PROXY, NO_PROXY) is mounted by AsyncClient.
        self._http = httpx.AsyncClient(
            transport=self._transport,
            trust_env=True,
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=20, max_keepalive_connections=20, keepalive_expiry=30.0
            ),
            follow_redirects=False,
        )
        # Headers and timeouts are prepared once here and each request is built whole
        # (``send`` takes it as it is): ``build_request`` would merge them on every request.
        self._headers = [
            (b"Accept", b"application/json"),
            (b"Accept-Encoding", b"gzip, deflate"),
            (b"Connection", b"keep-alive"),
            (b"User-Agent", USER_AGENT.encode("ascii")),
            (b"Authorization", b"Bearer " + self._token.reveal().encode("ascii")),
        ]
        self._extensions = {"timeout": timeout.as_dict()}

    async def aclose(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await http.aclose()

    @property
    def closed(self) -> bool:
        return self._http is None

    # ------------------------------------------------------------------ the request loop

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
        attempts: int | None = None,
    ) -> httpx.Response:
        """Send with budget, timeout and retries; return a 2xx response or raise SellError.

        ``attempts``: at most this many (default ``max_attempts``); 1 for a probe."""
        if self._http is None:
            raise RuntimeError("SellClient is not open: use `async with SellClient(...)`")
        method = method.upper()
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE")
        query = flatten_params(params or {})
        url = httpx.URL(self.base_url + path)
        if query:
            url = url.copy_merge_params(query)
        request_headers = self._headers
        body: bytes | None = None
        if json is not None:  # encoded once for every attempt, as httpx encodes it
            text = _json.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            body = text.encode()
            request_headers = [*request_headers, (b"Content-Type", b"application/json")]
        if headers:  # a request's own header replaces the client's of the same name
            names = {k.lower().encode() for k in headers}
            request_headers = [(k, v) for k, v in request_headers if k.lower() not in names]
            for name, value in headers.items():
                request_headers.append((name.encode("ascii"), value.encode("ascii")))
        secret = self._token.reveal()
        max_attempts = self.max_attempts if attempts is None else max(1, int(attempts))
        attempt = 0
        while True:
            attempt += 1
            waiting_since = trio.current_time()
            await self.budget.acquire()
            waited = trio.current_time() - waiting_since
            if method in WRITE_METHODS and (fence := write_fence.get()) is not None:
                fence()
            response: httpx.Response | None = None
            failure: str | None = None
            failure_text = ""
            try:
                with trio.move_on_after(self.timeout) as scope:
                    self.requests_sent += 1
                    response = await self._send(method, url, request_headers, body)
                if scope.cancelled_caught:
                    failure, failure_text = "timeout", f"no answer within {self.timeout:g} s"
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                failure, failure_text = "connect", _exc_text(exc, secret)
            except httpx.TimeoutException as exc:
                failure, failure_text = "timeout", _exc_text(exc, secret)
            except httpx.RemoteProtocolError as exc:
                failure, failure_text = "protocol", _exc_text(exc, secret)
            except httpx.TransportError as exc:
                failure, failure_text = "transport", _exc_text(exc, secret)

            if response is not None and 200 <= response.status_code < 300:
                self.last_date = response.headers.get("date")
                self.on_request(method, str(response.status_code), waited, False)
                return response

            status = response.status_code if response is not None else None
            retry_after = (
                parse_retry_after(response.headers.get("Retry-After"))
                if response is not None
                else None
            )
            retried = attempt < max_attempts and should_retry(status, failure, idempotent)
            self.on_request(
                method, str(status) if status is not None else str(failure), waited, retried
            )
            if retried:
                delay = retry_delay(
                    attempt,
                    base=self.backoff_base,
                    cap=self.backoff_cap,
                    retry_after=retry_after,
                    rand=self._rand,
                )
                if status == 429:
                    self.budget.defer(delay)
                log.warning(
                    "sell request retried",
                    method=method,
                    path=path,
                    status=status,
                    error=failure,
                    attempt=attempt,
                    max_attempts=max_attempts,
                    delay=round(delay, 3),
                )
                await trio.sleep(delay)
                continue
            raise self._error(
                method, path, response, failure, failure_text, attempt, idempotent, secret
            )

    async def _send(
        self, method: str, url: httpx.URL, headers: list[tuple[bytes, bytes]], body: bytes | None
    ) -> httpx.Response:
        """One request, its answer streamed and read whole under the limits (``body``)."""
        assert self._http is not None
        request = httpx.Request(
            method, url, headers=headers, content=body, extensions=self._extensions
        )
        response = await self._http.send(request, stream=True)
        try:
            return await read_capped(response, self.max_response_bytes)
        finally:
            await response.aclose()

    def _error(
        self,
        method: str,
        path: str,
        response: httpx.Response | None,
        failure: str | None,
        failure_text: str,
        attempt: int,
        idempotent: bool,
        secret: str,
    ) -> E.SellError:
        if response is None:
            what = "no usable answer from Sell" if failure == "protocol" else "could not reach Sell"
            err: E.SellError = E.NetworkError(
                f"{what}: {failure_text}", method=method, path=path, attempts=attempt
            )
            err.maybe_applied = (not idempotent) and failure != "connect"
            return err
        status = response.status_code
        logref, errs, snippet = E.parse_error_body(
            response.content, response.headers.get("X-Request-Id")
        )
        errs = [
            {k: E.scrub(v, secret) if isinstance(v, str) else v for k, v in e.items()} for e in errs
        ]
        message = E.default_message(status)
        if snippet:
            message = f"{message}: {E.scrub(snippet, secret)}"
        cls = E.error_class_for(status)
        err = cls(
            message,
            status=status,
            logref=E.scrub(logref, secret) if logref else None,
            errors=errs,
            method=method,
            path=path,
            attempts=attempt,
        )
        if isinstance(err, E.ServerError):  # 429/503: certainly not applied
            err.maybe_applied = (not idempotent) and status not in UNPROCESSED_STATUSES
        return err

    # ------------------------------------------------------------------ envelope helpers
    # A 2xx body that is not the envelope we expect raises MalformedResponseError (never a
    # KeyError/TypeError, and never a silent "empty"): a dropped item or a guessed-empty
    # field would look like a change in Sell.

    def _malformed(
        self, response: httpx.Response, method: str, path: str, what: str
    ) -> E.SellError:
        secret = self._token.reveal()
        return E.MalformedResponseError(
            E.scrub(what, secret),
            status=response.status_code,
            logref=E.scrub(response.headers.get("X-Request-Id", ""), secret) or None,
            method=method,
            path=path,
        )

    def _body(self, response: httpx.Response, method: str, path: str) -> dict[str, Any]:
        try:
            doc = response.json()
        except ValueError:
            snippet = E.text_snippet(response.content, 80)
            raise self._malformed(
                response,
                method,
                path,
                f"Sell answered {response.status_code} with a body that is not JSON: {snippet!r}",
            ) from None
        if not isinstance(doc, dict):
            raise self._malformed(
                response, method, path, "Sell answered with JSON that is not an object"
            )
        return doc

    def _data(self, response: httpx.Response, method: str, path: str) -> dict[str, Any]:
        data = self._body(response, method, path).get("data")
        if not isinstance(data, dict):
            raise self._malformed(response, method, path, "Sell's answer has no `data` object")
        return data

    def _items(
        self, response: httpx.Response, method: str, path: str
    ) -> tuple[list[dict[str, Any]], Any]:
        """The raw ``items`` (each ``{"data": {...}, "meta": ...}``) and
        ``meta.links.next_page``."""
        doc = self._body(response, method, path)
        items = doc.get("items")
        if not isinstance(items, list) or not all(
            isinstance(i, dict) and isinstance(i.get("data"), dict) for i in items
        ):
            raise self._malformed(
                response, method, path, "Sell's answer has no `items` list of `{data: {...}}`"
            )
        meta = doc.get("meta")
        links = meta.get("links") if isinstance(meta, dict) else None
        return items, links.get("next_page") if isinstance(links, dict) else None

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        return self._data(await self.request("GET", path, params=params), "GET", path)

    async def page(
        self, path: str, params: Mapping[str, Any] | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
        """One page: the records' data dicts and the params of the next page (or None)."""
        response = await self.request("GET", path, params=params)
        items, next_page = self._items(response, "GET", path)
        records = [i["data"] for i in items]
        return records, next_page_params(next_page) if records else None

    async def pages(
        self,
        path: str,
        filters: Mapping[str, Any] | None = None,
        *,
        per_page: int | None = None,
        paged: bool = True,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every page, until ``next_page`` is missing or a page is empty.

        ``paged=False`` sends no ``page``/``per_page`` on the first request (endpoints that
        may refuse them, like custom-field definitions) and then follows ``next_page`` only.
        """
        params = flatten_params(filters or {})
        if paged:
            params.setdefault("per_page", str(per_page or self.per_page))
            params.setdefault("page", "1")
        while True:
            records, nxt = await self.page(path, params)
            if not records:
                return
            yield records
            if nxt is None:
                return
            following = dict(params)
            following.update(nxt)
            if (
                "cursor" in nxt and "page" not in nxt
            ):  # a cursor replaces the page (Sell refuses both)
                following.pop("page", None)
            if paged and "page" not in nxt and "cursor" not in nxt:
                following["page"] = str(int(params.get("page", "1")) + 1)
            if following == params:  # a server pointing at the same page again
                return
            params = following

    # ------------------------------------------------------------------ account

    async def users_self(self) -> dict[str, Any]:
        return await self.get("/v2/users/self")

    async def accounts_self(self) -> dict[str, Any]:
        return await self.get("/v2/accounts/self")

    async def probe(self) -> None:
        """ONE request, never retried (``GET /v2/users/self``): whether Sell takes requests
        again after a rate-limit lockout. Still refused: ``RateLimitedError`` at once."""
        await self.request("GET", "/v2/users/self", attempts=1)

    # ------------------------------------------------------------------ custom fields

    async def custom_fields(self, resource_type: str) -> list[CustomFieldDef]:
        if resource_type not in RESOURCE_TYPES + ("deal",):
            raise ValueError(f"unknown resource type {resource_type!r}")
        out: list[CustomFieldDef] = []
        async for page in self.pages(f"/v2/{resource_type}/custom_fields", paged=False):
            out.extend(CustomFieldDef.from_data(d, resource_type) for d in page)
        return out

    # ------------------------------------------------------------------ leads and contacts

    async def list_leads(self, **filters: Any) -> AsyncIterator[Lead]:
        """Leads matching ``filters`` (``email=``, ``ids=``, ``custom_fields={name: value}``,
        ...). Candidates are re-checked here (``matches_filters``): Sell may ignore a
        custom-field filter it cannot apply and return every record, and whether ``email``
        is case-sensitive is unknown. If Sell refuses a custom-field filter (400: unknown or
        not Filterable), the listing is repeated without it and filtered here."""
        async for lead in self._listing(Lead.from_data, "/v2/leads", filters):
            yield lead

    async def list_contacts(self, **filters: Any) -> AsyncIterator[Contact]:
        """Contacts matching ``filters``, re-checked like ``list_leads``."""
        async for contact in self._listing(Contact.from_data, "/v2/contacts", filters):
            yield contact

    async def _listing(
        self, parse: Callable[[dict[str, Any]], Person], path: str, filters: dict[str, Any]
    ) -> AsyncIterator[Person]:
        sent = filters
        yielded = False
        while True:
            try:
                async for page in self.pages(path, sent):
                    for d in page:
                        record = parse_record(parse, d, "GET", path)
                        if matches_filters(record, filters):
                            yielded = True
                            yield record
                return
            except E.BadRequestError:
                if yielded or sent is not filters or not filters.get("custom_fields"):
                    raise
                log.info(
                    "sell refused a custom-field filter",
                    path=path,
                    fields=sorted(filters["custom_fields"]),
                )
                sent = {k: v for k, v in filters.items() if k != "custom_fields"}

    async def get_lead(self, lead_id: int) -> Lead:
        path = f"/v2/leads/{int(lead_id)}"
        return parse_record(Lead.from_data, await self.get(path), "GET", path)

    async def get_contact(self, contact_id: int) -> Contact:
        path = f"/v2/contacts/{int(contact_id)}"
        return parse_record(Contact.from_data, await self.get(path), "GET", path)

    async def create_lead(self, data: Mapping[str, Any], *, retry_unsafe: bool = False) -> Lead:
        return await self._write(Lead.from_data, "POST", "/v2/leads", data, retry_unsafe)

    async def create_contact(
        self, data: Mapping[str, Any], *, retry_unsafe: bool = False
    ) -> Contact:
        return await self._write(Contact.from_data, "POST", "/v2/contacts", data, retry_unsafe)

    async def update_lead(self, lead_id: int, data: Mapping[str, Any]) -> Lead:
        return await self._write(Lead.from_data, "PUT", f"/v2/leads/{int(lead_id)}", data, True)

    async def update_contact(self, contact_id: int, data: Mapping[str, Any]) -> Contact:
        path = f"/v2/contacts/{int(contact_id)}"
        return await self._write(Contact.from_data, "PUT", path, data, True)

    async def delete_lead(self, lead_id: int, *, missing_ok: bool = False) -> bool:
        return await self._delete(f"/v2/leads/{int(lead_id)}", missing_ok)

    async def delete_contact(self, contact_id: int, *, missing_ok: bool = False) -> bool:
        return await self._delete(f"/v2/contacts/{int(contact_id)}", missing_ok)

    async def _write(
        self,
        parse: Callable[[dict[str, Any]], R],
        method: str,
        path: str,
        data: Mapping[str, Any],
        idempotent: bool,
    ) -> R:
        response = await self.request(
            method, path, json={"data": dict(data)}, idempotent=idempotent
        )
        try:
            return parse_record(parse, self._data(response, method, path), method, path)
        except E.MalformedResponseError as exc:
            # A 2xx means the write happened; a create must be looked up, not repeated.
            exc.maybe_applied = not idempotent
            raise

    async def _delete(self, path: str, missing_ok: bool) -> bool:
        """True when deleted now; False when already gone and ``missing_ok`` (a retried
        DELETE whose first attempt went through also ends here)."""
        try:
            await self.request("DELETE", path)
        except E.NotFoundError as exc:
            if missing_ok or exc.attempts > 1:
                return False
            raise
        return True

    # ------------------------------------------------------------------ conversions

    async def lead_conversions(self, **filters: Any) -> list[LeadConversion]:
        """``lead_conversions(lead_id=...)``: every matching conversion (newest first)."""
        path = "/v2/lead_conversions"
        out: list[LeadConversion] = []
        async for page in self.pages(path, filters, per_page=100):
            out.extend(parse_record(LeadConversion.from_data, d, "GET", path) for d in page)
        return out

    async def lead_conversion_pages(
        self, per_page: int = 200, **filters: Any
    ) -> AsyncIterator[list[LeadConversion]]:
        """The matching conversions page by page, newest first (by id), following
        ``next_page`` (a cursor past page 1): the caller stops when it has seen enough.
        ``per_page`` up to 200 on this endpoint."""
        path = "/v2/lead_conversions"
        async for page in self.pages(path, filters, per_page=per_page):
            yield [parse_record(LeadConversion.from_data, d, "GET", path) for d in page]

    # No ``convert_lead``: the daemon never converts leads itself. A retried
    # ``POST /v2/lead_conversions`` may create a second contact and deal instead of a 422
    # (reported by a third party), and Sell has no idempotency key to prevent it.

    # ------------------------------------------------------------------ Sync API

    @staticmethod
    def _device(device_uuid: str) -> dict[str, str]:
        if not device_uuid:
            raise ValueError("a device UUID is required")
        return {"X-Basecrm-Device-UUID": str(device_uuid)}

    async def sync_start(self, device_uuid: str) -> SyncSession | None:
        """Start a session: None when there is nothing new (204)."""
        path = "/v2/sync/start"
        response = await self.request(
            "POST", path, headers=self._device(device_uuid), idempotent=True
        )
        if response.status_code == 204:
            return None
        data = self._data(response, "POST", path)
        session_id = data.get("id")
        queues = data.get("queues") or []
        if not session_id or not isinstance(session_id, str | int) or not isinstance(queues, list):
            raise self._malformed(response, "POST", path, "Sell sent a sync session without an id")
        names = [
            str(q["data"]["name"])
            for q in queues
            if isinstance(q, dict) and isinstance(q.get("data"), dict) and q["data"].get("name")
        ]
        return SyncSession(id=str(session_id), queues=tuple(names) or ("main",))

    async def sync_fetch(
        self, session_id: str, device_uuid: str, queue: str = "main"
    ) -> list[SyncItem] | None:
        """One page of the queue: None when drained (204); an empty list means "fetch again"."""
        path = f"/v2/sync/{session_id}/queues/{queue}"
        response = await self.request("GET", path, headers=self._device(device_uuid))
        if response.status_code == 204:
            return None
        items, _next = self._items(response, "GET", path)
        return [SyncItem.from_item(i) for i in items]

    async def sync_ack(self, keys: Iterable[str], device_uuid: str) -> int:
        """Acknowledge ``keys``; returns how many were sent (no call when there are none)."""
        ack_keys = [k for k in dict.fromkeys(keys) if k]
        for start in range(0, len(ack_keys), 100):
            await self.request(
                "POST",
                "/v2/sync/ack",
                json={"data": {"ack_keys": ack_keys[start : start + 100]}},
                headers=self._device(device_uuid),
                idempotent=True,
            )
        return len(ack_keys)


def parse_record(
    parse: Callable[[dict[str, Any]], R], data: dict[str, Any], method: str, path: str
) -> R:
    """A typed record from a data dict, or MalformedResponseError (never KeyError/TypeError)."""
    try:
        return parse(data)
    except RecordFormatError as exc:
        raise E.MalformedResponseError(f"Sell sent {exc}", method=method, path=path) from None


def _exc_text(exc: BaseException, secret: str) -> str:
    """The exception's name and text; an empty text is taken from its causes (a TLS
    failure's reason sits two levels down, under the transport's own error)."""
    text, cause = str(exc), exc.__cause__ or exc.__context__
    for _ in range(4):
        if text or cause is None:
            break
        text, cause = str(cause), cause.__cause__ or cause.__context__
    text = text or type(exc).__name__
    if len(text) > 160:
        text = text[:159] + "…"
    return f"{type(exc).__name__}: {E.scrub(text, secret)}"
