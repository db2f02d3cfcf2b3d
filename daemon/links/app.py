"""The links service's ASGI app: routes over ``Services``, and the edge every request crosses.

Routes (a GET never changes anything — mail scanners follow links):

- ``GET /u/{token}``: the footer page (channel, current choice, a button per choice).
- ``POST /u/{token}``: ``List-Unsubscribe=One-Click`` (RFC 8058, form or multipart) or the
  page's buttons (``action=unsubscribe|resubscribe``, ``frequency=…``). Idempotent. One
  link (purpose, channel, KulooId) makes at most ``links.token_changes_per_hour`` changes
  an hour (429 past it, nothing written); a POST that changes nothing always answers 200.
- ``POST /signup/{channel}`` (form or JSON: ``email``, ``first_name``, ``last_name``):
  double opt-in — nothing is stored, a confirmation email carries a ``/c/{token}`` link
  whose signed claim holds the address; the same answer whether the address is known.
  ``OPTIONS`` answers CORS preflights for ``links.allowed_origins`` only.
- ``GET /c/{token}`` shows a confirm button; ``POST /c/{token}`` confirms (the user is
  created with source ``signup``, or an unsubscribed one subscribed again).
- ``GET /r/{token}``: marks Last active (business time) and answers 302 to the signed
  target (http/https only): never an open redirect.
- ``GET /healthz``.

The edge (``LinksApp.__call__``): the client address (``X-Forwarded-For`` only from a
trusted proxy), the per-address rate limit — which never refuses a POST whose token is
valid —, security headers on every answer, body size limit, an access log line that
names the route, never the token (one info line, ``abandoned``, for a body the client
never finished), and a plain 500 page for anything unexpected.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog
import trio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route, Router

from ..config import Config
from ..services import Services
from ..store import NotFound
from ..store import channels as channel_store
from ..store import users as user_store
from ..tokens import BadToken, Claim, Purpose, Signer
from ..vocabulary import Actor, Frequency, InvalidEmail, valid_email
from . import limits, pages

log = structlog.get_logger("kuloo.links")

NAME_MAX = 200
CHANNEL_ID_MAX = 2**63 - 1
ONE_CLICK = ("List-Unsubscribe", "One-Click")


class TooLarge(Exception):
    pass


class BadForm(Exception):
    pass


@dataclass(frozen=True)
class Settings:
    """The [links] keys the app reads, checked once by ``config``."""

    allowed_origins: frozenset[str]
    trusted: tuple[limits.Network, ...]
    rate_per_minute: float
    burst: int
    max_body_bytes: int
    max_header_bytes: int
    confirm_seconds: float
    # public_url is https: every answer, hypercorn's own included, carries HSTS (server.py).
    hsts: bool = False

    @classmethod
    def from_config(cls, config: Config) -> Settings:
        return cls(
            frozenset(config["links.allowed_origins"]),
            limits.networks(config["links.trusted_proxies"]),
            config["links.rate_per_minute"],
            config["links.rate_burst"],
            config["links.max_body_bytes"],
            config["links.max_header_bytes"],
            config["links.confirm_hours"] * 3600.0,
            hsts=str(config["links.public_url"]).lower().startswith("https://"),
        )


def _page(status: int, title: str, text: str) -> HTMLResponse:
    return HTMLResponse(pages.message(title, text), status_code=status)


BAD_LINK = (
    "This link is not valid",
    "The link may have been cut short or changed. Nothing was changed. "
    "Please use the link from your most recent email.",
)
UNKNOWN = (
    "This link is no longer valid",
    "We could not find this subscription. Nothing was changed.",
)
UNAVAILABLE = ("Temporarily unavailable", "Please try again in a few minutes.")


def _route_label(path: str) -> str:
    """The route of a path for the access log: never the token itself."""
    head = path.split("/", 2)[1] if path.count("/") >= 1 else ""
    if head in ("u", "r", "c") and path.count("/") >= 2:
        return f"/{head}/…"
    if head == "signup":
        return path[:40]  # a channel id is no secret
    return path if path in ("/", "/healthz") else "other"


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def parse_form(content_type: str, body: bytes) -> dict[str, str]:
    """Fields of a urlencoded, multipart or JSON body (first value of each); ``BadForm`` otherwise."""
    kind = content_type.split(";")[0].strip().lower()
    try:
        if kind in ("application/x-www-form-urlencoded", ""):
            parsed = parse_qs(
                body.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=20,
            )
            return {k: v[0] for k, v in parsed.items()}
        if kind == "multipart/form-data":
            head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
            if not msg.is_multipart():
                raise BadForm
            out: dict[str, str] = {}
            for part in list(msg.iter_parts())[:20]:
                name = part.get_param("name", header="content-disposition")
                if isinstance(name, str) and name not in out:
                    payload = part.get_payload(decode=True)  # bytes (decode=True)
                    out[name] = payload.decode("utf-8").strip()  # type: ignore[union-attr]
            return out
        if kind == "application/json":
            data = json.loads(body.decode("utf-8"))
            if not isinstance(data, dict):
                raise BadForm
            return {k: v for k, v in data.items() if isinstance(k, str)}
    except (UnicodeDecodeError, ValueError, AttributeError, TypeError):
        raise BadForm from None
    raise BadForm


def _clean_name(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value.strip()) > NAME_MAX or not value.isprintable():
        raise BadForm
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadForm from None
    return value.strip()


def safe_target(target: str) -> bool:
    """A click target we redirect to: an absolute http(s) URL with nothing to smuggle."""
    if not target or any(c in target for c in "\r\n\t\\") or not target.isprintable():
        return False
    parts = urlsplit(target)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class LinksApp:
    """The ASGI app. ``confirmations`` is the callable that queues a signup confirmation."""

    def __init__(self, services: Services, confirmations=None) -> None:
        self.services = services
        self.settings = Settings.from_config(services.config)
        self.limiter = limits.RateLimiter(self.settings.rate_per_minute, self.settings.burst)
        self.token_changes = limits.ChangeLimiter(services.config["links.token_changes_per_hour"])
        self.confirmations = confirmations or (lambda *_args: None)
        self._signer: Signer | None = None
        self.edge_headers = [(k.encode(), v.encode()) for k, v in pages.SECURITY_HEADERS.items()]
        # No slash redirects: Starlette would build their Location from the request's Host.
        self.router = Router(
            redirect_slashes=False,
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/u/{token}", self.preferences, methods=["GET"]),
                Route("/u/{token}", self.change, methods=["POST"]),
                Route("/r/{token}", self.click, methods=["GET"]),
                Route("/c/{token}", self.confirm_page, methods=["GET"]),
                Route("/c/{token}", self.confirm, methods=["POST"]),
                Route("/signup/{channel:int}", self.signup, methods=["POST"]),
                Route("/signup/{channel:int}", self.preflight, methods=["OPTIONS"]),
            ],
        )

    # ------------------------------------------------------------------ the edge

    def signer(self) -> Signer | None:
        if self._signer is None:
            try:
                self._signer = Signer.from_secret(
                    self.services.config.credential("link_signing_key")
                )
            except (OSError, ValueError) as exc:  # missing, unreadable or empty credential
                log.error(
                    "link-signing key unavailable: links cannot be verified",
                    problem=type(exc).__name__,
                )
                return None
        return self._signer

    def reload_keys(self) -> None:
        """After SIGHUP: read the credential again (key rotation)."""
        self._signer = None

    def verify(self, token: str, purpose: Purpose) -> Claim | None:
        signer = self.signer()
        if signer is None:
            return None
        try:
            return signer.verify(token, self.services.clock.now(), purpose)
        except BadToken:
            return None

    def _valid_token_post(self, scope: dict) -> bool:
        """A POST that carries a genuine token: never throttled (RFC 8058 senders share addresses)."""
        if scope["method"] != "POST":
            return False
        parts = scope["path"].split("/")
        if len(parts) != 3 or parts[1] not in ("u", "c"):
            return False
        return (
            self.verify(parts[2], Purpose.UNSUBSCRIBE if parts[1] == "u" else Purpose.CONFIRM)
            is not None
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.router(scope, receive, send)
            return
        started = trio.current_time()
        headers = [
            (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", [])
        ]
        peer = (scope.get("client") or ("unknown", 0))[0]
        client = limits.client_address(
            peer, [v for k, v in headers if k == "x-forwarded-for"], self.settings.trusted
        )
        scope["kuloo.client"] = client  # the signup's per-client cap counts it
        status: dict[str, Any] = {"code": 0}

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *self.edge_headers]}
            await send(message)

        head_bytes = (
            len(scope.get("raw_path") or b"")
            + len(scope.get("query_string") or b"")
            + sum(len(k) + len(v) + 4 for k, v in scope.get("headers", []))
        )
        try:
            if head_bytes > self.settings.max_header_bytes:
                # h11 bounds only a head that arrives in pieces; a whole one is measured here.
                await _page(431, "Request headers too large", "Nothing was changed.")(
                    scope, receive, send_with_headers
                )
            elif not self.limiter.allow(client, trio.current_time()) and not self._valid_token_post(
                scope
            ):
                response: Response = _page(
                    429, "Too many requests", "Please wait a minute and try again."
                )
                response.headers["retry-after"] = "60"
                await response(scope, receive, send_with_headers)
            else:
                await self.router(scope, receive, send_with_headers)
        except ClientDisconnect:  # the client went away mid-body (or was too slow): no answer
            status["abandoned"] = True
        except Exception:
            log.exception(
                "links request failed", route=_route_label(scope["path"]), method=scope["method"]
            )
            if not status["code"]:
                await _page(
                    500, "Something went wrong", "Nothing was changed. Please try again later."
                )(scope, receive, send_with_headers)
        finally:
            self.services.metrics.links_request(scope["path"], status["code"])
            log.info(
                "links request",
                method=scope["method"],
                route=_route_label(scope["path"]),
                status=status["code"],
                client=client,
                ms=round((trio.current_time() - started) * 1000, 1),
                **({"abandoned": True} if status.get("abandoned") else {}),
            )

    # ------------------------------------------------------------------ routes

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def preferences(self, request: Request) -> Response:
        claim = self.verify(request.path_params["token"], Purpose.UNSUBSCRIBE)
        if claim is None:
            return self._bad_link()
        try:
            sub = await self.services.store.run(
                user_store.subscriber, claim.channel, claim.kuloo_id
            )
        except NotFound:
            return _page(404, *UNKNOWN)
        return HTMLResponse(
            pages.preferences(sub.channel_name, sub.user.frequency.value, sub.user.unsubscribed)
        )

    def _bad_link(self) -> Response:
        if self.signer() is None:
            return _page(503, *UNAVAILABLE)
        return _page(400, *BAD_LINK)

    async def change(self, request: Request) -> Response:
        claim = self.verify(request.path_params["token"], Purpose.UNSUBSCRIBE)
        if claim is None:
            return self._bad_link()
        try:
            form = parse_form(
                request.headers.get("content-type", ""),
                await read_body(request, self.settings.max_body_bytes),
            )
        except TooLarge:
            return _page(413, "Request too large", "Nothing was changed.")
        except BadForm:
            form = {}
        one_click = form.get(ONE_CLICK[0]) == ONE_CLICK[1]
        action, frequency = form.get("action"), form.get("frequency")
        if one_click or action == "unsubscribe":
            changes: dict[str, Any] = {"unsubscribed": True}
            done = "You are unsubscribed: you will receive no more emails from this channel."
        elif action == "resubscribe":
            changes, done = {"unsubscribed": False}, "You are subscribed again."
        elif isinstance(frequency, str) and frequency in tuple(Frequency):
            # Choosing how often is choosing to receive: it also ends an earlier unsubscribe.
            changes = {"frequency": Frequency(frequency), "unsubscribed": False}
            done = f"Saved: {pages.choice_words(frequency, False)}."
        else:
            return _page(
                400,
                "Nothing to change",
                "This request did not say what to change. Nothing was changed.",
            )
        key = (claim.purpose.value, claim.channel, claim.kuloo_id)
        taken_at = trio.current_time()
        try:
            if self.token_changes.take(key, taken_at):
                sub = await self.services.store.run(
                    user_store.update_subscriber,
                    claim.channel,
                    claim.kuloo_id,
                    changes,
                    Actor.LINK,
                    self.services.clock.now(),
                )
                if not sub.changed:
                    self.token_changes.give_back(key, taken_at)
            else:
                # Past the limit: a POST that would change nothing (a retry) still answers 200.
                sub = await self.services.store.run(
                    user_store.subscriber, claim.channel, claim.kuloo_id
                )
                if any(getattr(sub.user, field) != value for field, value in changes.items()):
                    log.info("link change refused: too many changes", channel_id=claim.channel)
                    response = _page(
                        429,
                        "Too many changes",
                        "This link has made many changes in the last hour. "
                        "Nothing was changed. Please try again later.",
                    )
                    response.headers["retry-after"] = "3600"
                    return response
        except NotFound:
            self.token_changes.give_back(key, taken_at)
            return _page(404, *UNKNOWN)
        if sub.changed:
            log.info(
                "user changed by link",
                user_id=sub.user.id,
                channel_id=claim.channel,
                changed=list(sub.changed),
            )
            self.services.publish("user.updated", sub.user)
        if one_click:
            return PlainTextResponse("unsubscribed\n")
        return HTMLResponse(
            pages.preferences(
                sub.channel_name, sub.user.frequency.value, sub.user.unsubscribed, done
            )
        )

    async def click(self, request: Request) -> Response:
        claim = self.verify(request.path_params["token"], Purpose.CLICK)
        if claim is None or not safe_target(claim.target):
            return self._bad_link()
        try:
            sub = await self.services.store.run(
                user_store.subscriber_active,
                claim.channel,
                claim.kuloo_id,
                self.services.clock.now(),
            )
        except NotFound:
            return _page(404, *UNKNOWN)
        if sub.changed:
            self.services.publish("user.updated", sub.user)
        return RedirectResponse(claim.target, status_code=302)

    # ------------------------------------------------------------------ signup (double opt-in)

    def _cors(self, request: Request) -> dict[str, str] | None:
        """CORS headers for an allowed origin; {} without an Origin; None for a refused one."""
        origin = request.headers.get("origin")
        if origin is None:
            return {}
        if origin in self.settings.allowed_origins:
            return {"access-control-allow-origin": origin, "vary": "Origin"}
        return None

    async def preflight(self, request: Request) -> Response:
        cors = self._cors(request)
        if not cors:
            return Response(status_code=403, headers={"vary": "Origin"})
        return Response(
            status_code=204,
            headers={
                **cors,
                "access-control-allow-methods": "POST",
                "access-control-allow-headers": "Content-Type",
                "access-control-max-age": "600",
            },
        )

    async def signup(self, request: Request) -> Response:
        cors = self._cors(request)
        if cors is None:
            return Response(
                "origin not allowed\n",
                status_code=403,
                media_type="text/plain",
                headers={"vary": "Origin"},
            )
        content_type = request.headers.get("content-type", "")
        wants_json = content_type.split(";")[0].strip().lower() == "application/json"

        def answer(status: int, title: str, text: str) -> Response:
            if wants_json:
                return JSONResponse(
                    {"status": status, "message": text}, status_code=status, headers=cors
                )
            return HTMLResponse(pages.message(title, text), status_code=status, headers=cors)

        channel_id = request.path_params["channel"]
        if not 1 <= channel_id <= CHANNEL_ID_MAX:
            return answer(404, "No such newsletter", "There is no newsletter here.")
        try:
            form = parse_form(content_type, await read_body(request, self.settings.max_body_bytes))
            address = valid_email(form["email"]) if isinstance(form.get("email"), str) else None
            if address is None:
                raise BadForm
            names = (_clean_name(form.get("first_name")), _clean_name(form.get("last_name")))
        except TooLarge:
            return answer(413, "Request too large", "The form was too large.")
        except (BadForm, InvalidEmail, UnicodeEncodeError):
            return answer(
                400,
                "Please check the form",
                f"Please give a valid email address (and names of at most {NAME_MAX} characters).",
            )
        try:
            channel = await self.services.store.run(channel_store.get, channel_id)
        except NotFound:
            return answer(404, "No such newsletter", "There is no newsletter here.")
        signer = self.signer()
        if signer is None:
            return answer(503, *UNAVAILABLE)
        now = self.services.clock.now().timestamp()
        expires = int(now + self.settings.confirm_seconds)
        # ``issued`` (rounded up: a change in the same second is not "after") is signed too.
        target = json.dumps([address, *names, math.ceil(now)], ensure_ascii=True)
        claim = Claim(Purpose.CONFIRM, channel_id, "", target, expires)
        client = request.scope.get("kuloo.client", "")
        self.confirmations(channel, address, signer.sign(claim), client)
        # The same answer whether the address was new, known, or unsubscribed.
        return answer(
            202,
            "Please confirm",
            "Thanks! Please check your inbox: we sent you a link to confirm your subscription.",
        )

    def _confirm_claim(self, token: str) -> tuple[Claim, str, str, str, datetime] | None:
        """The claim, its address and names, and when it was issued.

        Tokens from before ``issued`` was signed hold ``[email, first, last]``: they count
        as issued ``confirm_hours`` before they expire."""
        claim = self.verify(token, Purpose.CONFIRM)
        if claim is None:
            return None
        try:
            fields = json.loads(claim.target)
            if not isinstance(fields, list) or len(fields) not in (3, 4):
                return None
            address, first, last = fields[:3]
            issued = (
                fields[3] if len(fields) == 4 else claim.expires - self.settings.confirm_seconds
            )
            if isinstance(issued, bool) or not isinstance(issued, int | float):
                return None
            return (
                claim,
                valid_email(address),
                _clean_name(first),
                _clean_name(last),
                datetime.fromtimestamp(issued, UTC),
            )
        except (ValueError, TypeError, OverflowError, OSError, BadForm):
            return None

    async def confirm_page(self, request: Request) -> Response:
        found = self._confirm_claim(request.path_params["token"])
        if found is None:
            return self._bad_link()
        claim, address, _first, _last, _issued = found
        try:
            channel = await self.services.store.run(channel_store.get, claim.channel)
        except NotFound:
            return _page(404, *UNKNOWN)
        return HTMLResponse(pages.confirm(channel.name, address))

    async def confirm(self, request: Request) -> Response:
        found = self._confirm_claim(request.path_params["token"])
        if found is None:
            return self._bad_link()
        claim, address, first, last, issued = found
        fields = {
            "email": address,
            **({"first_name": first} if first else {}),
            **({"last_name": last} if last else {}),
        }
        try:
            sub = await self.services.store.run(
                user_store.sign_up,
                claim.channel,
                fields,
                Actor.LINK,
                self.services.clock.now(),
                issued,
                self.services.config.erasure_key(),
            )
        except NotFound:
            return _page(404, *UNKNOWN)
        except user_store.ErasedAfter:  # the erasure came after this link: it wins
            log.info("signup confirmation predates an erasure", channel_id=claim.channel)
            return _page(
                200,
                "Link no longer valid",
                "This confirmation link is older than a later change to this address. "
                "Nothing was changed. To subscribe, sign up once more.",
            )
        if sub.stale:
            log.info(
                "signup confirmation already used", user_id=sub.user.id, channel_id=claim.channel
            )
            return _page(
                200,
                "Already confirmed",
                "This link was already used. Nothing was changed. To subscribe again, "
                "sign up once more or use the link in your latest email.",
            )
        if sub.created or sub.changed:
            log.info(
                "signup confirmed",
                user_id=sub.user.id,
                channel_id=claim.channel,
                created=sub.created,
            )
            self.services.publish("user.updated", sub.user)
        return _page(
            200, "You are subscribed", f"Thank you: {address} now receives {sub.channel_name}."
        )
