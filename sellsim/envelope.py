"""Wire shapes of the Sell API: requests and responses as plain data, and the JSON envelopes.

Owns ``Request``/``Response`` (transport-neutral), the single-record, collection and error
envelopes, and the HTML error page a proxy would serve. Nothing here knows about state.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl

MORE_INFO = "https://developers.getbase.com/docs/rest/articles/errors"
JSON_TYPE = b"application/json; charset=utf-8"


@dataclass
class Request:
    method: str  # exactly as sent (case preserved)
    path: str
    query_string: str = ""
    headers: dict[str, str] = dataclasses.field(default_factory=dict)  # lower-cased names
    body: bytes = b""
    host: str = "127.0.0.1"

    @property
    def query(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query_string, keep_blank_values=True)


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)
    content_type: bytes | None = JSON_TYPE
    delay: float = 0.0  # seconds the transport waits before answering ("slow" fault)
    drop: bool = False  # the transport closes the connection without answering ("drop" fault)
    request_id: str = ""


def new_request_id() -> str:
    """A logref shaped like the real ones (``b86t2-ah1ou-etpkg-uesig``)."""
    n = int.from_bytes(secrets.token_bytes(13), "big")
    chars = []
    for _ in range(20):
        n, r = divmod(n, 32)
        chars.append(_B32[r])
    s = "".join(chars)
    return f"{s[:5]}-{s[5:10]}-{s[10:15]}-{s[15:]}"


_B32 = "0123456789abcdefghijklmnopqrstuv"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(status: int, payload: Any) -> Response:
    return Response(status, dumps(payload))


def one(type_: str, data: dict[str, Any], status: int = 200) -> Response:
    return json_response(status, {"data": data, "meta": {"type": type_}})


def collection(
    type_: str,
    records: list[dict[str, Any]],
    links: dict[str, str],
    metas: list[dict[str, Any]] | None = None,
) -> Response:
    """A collection page; ``metas`` adds keys (e.g. ``version``) to each item's meta."""
    extra = metas or [{}] * len(records)
    return json_response(
        200,
        {
            "items": [
                {"data": r, "meta": {"type": type_, **m}}
                for r, m in zip(records, extra, strict=True)
            ],
            "meta": {"type": "collection", "count": len(records), "links": links},
        },
    )


def empty(status: int = 204) -> Response:
    return Response(status, b"", content_type=None)


def status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


@dataclass
class ApiError(Exception):
    """One or more errors of the same response; raised by handlers, rendered by ``render``."""

    status: int
    code: str
    message: str
    details: str = ""
    resource: str | None = None
    field: str | None = None
    more: list[ApiError] = dataclasses.field(default_factory=list)

    def items(self) -> list[ApiError]:
        return [self, *self.more]


def error_body(err: ApiError, logref: str) -> dict[str, Any]:
    errors = []
    for e in err.items():
        detail: dict[str, Any] = {"code": e.code, "message": e.message, "details": e.details}
        if e.resource is not None:
            detail["resource"] = e.resource
        if e.field is not None:
            detail["field"] = e.field
        errors.append(
            {"error": detail, "meta": {"type": "error", "links": {"more_info": MORE_INFO}}}
        )
    return {
        "errors": errors,
        "meta": {
            "type": "errors",
            "http_status": status_line(err.status),
            "logref": logref,
            "links": {"more_info": MORE_INFO},
        },
    }


def render(err: ApiError, logref: str) -> Response:
    return Response(err.status, dumps(error_body(err, logref)), request_id=logref)


def html_error(status: int) -> Response:
    phrase = status_line(status)
    body = (
        f"<html>\r\n<head><title>{phrase}</title></head>\r\n<body>\r\n"
        f"<center><h1>{phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
    return Response(status, body, content_type=b"text/html")


# Common errors -------------------------------------------------------------------------------


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "Unauthorized",
        "Required access token is missing, malformed, expired, or invalid.",
    )


def not_found(details: str = "Requested path was not found.") -> ApiError:
    return ApiError(404, "not_found", "Not Found", details)


def invalid_param(name: str, why: str) -> ApiError:
    return ApiError(
        400,
        "invalid_param",
        "invalid request query parameter",
        f"The request query parameter '{name}' is malformed, missing, or has an invalid value ({why})",
    )


def invalid_payload(details: str) -> ApiError:
    return ApiError(400, "invalid_payload", "invalid payload", details)
