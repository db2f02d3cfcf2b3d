"""Assertions shared by the sellsim conformance tests."""

from __future__ import annotations

import re

import httpx

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def assert_error(r: httpx.Response, status: int, code: str, field: str | None = None) -> dict:
    """The response is the Sell error envelope with this status and first error code."""
    assert r.status_code == status, r.text
    body = r.json()
    assert body["meta"]["type"] == "errors"
    assert body["meta"]["http_status"].startswith(f"{status} ")
    assert body["meta"]["logref"] == r.headers["x-request-id"]
    err = body["errors"][0]["error"]
    assert err["code"] == code, body
    assert body["errors"][0]["meta"]["type"] == "error"
    if field is not None:
        assert err["field"] == field, body
    return body
