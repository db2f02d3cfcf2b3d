"""Error-body parsing: the envelope, its variants, and bodies that are not JSON at all."""

from __future__ import annotations

import json

from kuloo_daemon.crm import errors as E

TOKEN = "s3cr3t" * 11  # 66 chars, token-shaped


def test_envelope_with_data_pointer_and_logref():
    body = {
        "errors": [
            {"error": {"code": "incorrect_value", "message": "attribute value is incorrect",
                       "details": "not in list", "resource": "lead", "field": "/data/custom_fields/Promo"},
             "meta": {"type": "error"}},
            {"error": {"code": "unknown", "message": "unknown attribute", "field": "/invalid_field"}},
        ],
        "meta": {"type": "collection", "http_status": "422 Unprocessable Entity", "logref": "b5hsh-1r4th"},
    }  # fmt: skip
    logref, errs, snippet = E.parse_error_body(json.dumps(body).encode(), "other-id")
    assert logref == "b5hsh-1r4th"
    assert snippet == ""
    assert [e["code"] for e in errs] == ["incorrect_value", "unknown"]
    assert errs[0]["field"] == "/custom_fields/Promo"
    assert errs[0]["raw_field"] == "/data/custom_fields/Promo"
    assert errs[1]["field"] == "/invalid_field"
    err = E.ValidationError("refused", status=422, logref=logref, errors=errs)
    assert err.code == "incorrect_value"
    assert err.fields == ["/custom_fields/Promo", "/invalid_field"]
    assert "incorrect_value /custom_fields/Promo: not in list" in str(err)


def test_html_body_becomes_a_short_snippet():
    html = b"<html><head><style>p{}</style></head><body><h1>400 Bad Request</h1><p>nginx</p></body></html>"
    logref, errs, snippet = E.parse_error_body(html, "req-1")
    assert logref == "req-1"
    assert errs == []
    assert snippet == "400 Bad Request nginx"


def test_empty_and_odd_json_bodies():
    assert E.parse_error_body(b"", None) == (None, [], "")
    _, errs, _ = E.parse_error_body(b'{"error": "boom"}', None)
    assert errs[0]["message"] == "boom"
    _, errs, snippet = E.parse_error_body(b"[1, 2]", None)
    assert errs == [] and snippet == "[1, 2]"
    _, errs, _ = E.parse_error_body(b'{"errors": [{"code": "x", "field": "email"}]}', None)
    assert errs[0]["code"] == "x" and errs[0]["field"] == "/email"


def test_status_mapping():
    assert E.error_class_for(401) is E.AuthenticationError
    assert E.error_class_for(403) is E.ForbiddenError
    assert E.error_class_for(404) is E.NotFoundError
    assert E.error_class_for(422) is E.ValidationError
    assert E.error_class_for(429) is E.RateLimitedError
    assert E.error_class_for(502) is E.ServerError
    assert E.error_class_for(400) is E.BadRequestError
    assert E.error_class_for(406) is E.BadRequestError


def test_scrub_removes_token_from_server_text():
    assert E.scrub(f"bad header Bearer {TOKEN}!", TOKEN) == "bad header Bearer ****!"
    assert E.scrub("fine", TOKEN) == "fine"


def test_scrub_removes_every_run_of_eight_token_characters():
    token = "Q7f" + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXY"[:61]
    cut = f"Authorization: Bearer {token[:57]}…"  # an echo cut short
    assert E.scrub(cut, token) == "Authorization: Bearer ****…"
    assert E.scrub(f"id {token[20:28]} and {token[30:50]}!", token) == "id **** and ****!"
    assert E.scrub(f"x{token[5:12]}x", token) == f"x{token[5:12]}x"  # 7 characters stay
    assert E.scrub("Bearer some-other-credential, then", token) == "Bearer ****, then"
    assert E.scrub("", token) == "" and E.scrub("plain text", None) == "plain text"
