"""Error-body parsing: the envelope, its variants, and bodies that are not JSON at all."""

from __future__ import annotations

import json

import pytest

from kuloo_daemon.crm import errors as E

TOKEN = "s3cr3t" * 11  # 66 chars, token-shaped


def test_envelope_with_data_pointer_and_logref():
    body = {
        "errors": [
            {
                "error": {
                    "code": "incorrect_value",
                    "message": "attribute value is incorrect",
                    "details": "not in list",
                    "resource": "lead",
                    "field": "/data/custom_fields/Promo",
                },
                "meta": {"type": "error"},
            },
            {
                "error": {
                    "code": "unknown",
                    "message": "unknown attribute",
                    "field": "/invalid_field",
                }
            },
        ],
        "meta": {
            "type": "collection",
            "http_status": "422 Unprocessable Entity",
            "logref": "b5hsh-1r4th",
        },
    }
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


# ----------------------------------------------------------------------------- at the edges
# (formerly test_crm_errors_bounds.py)
# Sell errors at their edges: the status table's boundaries, the text an operator reads,
# error bodies in every shape Sell (or a proxy in front of it) sends.
#
# Written to kill the mutants `make mutate` found surviving in crm/errors.py; each test
# names the planted bugs it was checked against.


@pytest.mark.parametrize(
    ("status", "cls", "message"),
    [
        (400, E.BadRequestError, "Sell rejected the request"),
        (401, E.AuthenticationError, "Sell rejected the API token"),
        (403, E.ForbiddenError, "Sell refused access to this resource"),
        (404, E.NotFoundError, "not found in Sell"),
        (409, E.BadRequestError, "Sell rejected the request"),
        (422, E.ValidationError, "Sell refused the record"),
        (429, E.RateLimitedError, "Sell rate limit exceeded"),
        (499, E.BadRequestError, "Sell rejected the request"),
        (500, E.ServerError, "Sell server error"),
        (501, E.ServerError, "Sell server error"),
        (503, E.ServerError, "Sell server error"),
        (599, E.ServerError, "Sell server error"),
    ],
)
def test_status_table_and_its_500_boundary(status, cls, message):
    """Planted bugs: ``status > 500`` / ``>= 501`` (a plain 500 becomes a non-retryable
    "bad request"), ``not in`` the table, another default text."""
    assert E.error_class_for(status) is cls
    assert E.default_message(status) == message


def test_kinds_are_distinct_and_stable():
    """Planted bug: a ``kind`` renamed (the sync engine and the control replies use it)."""
    kinds = {
        cls: cls.kind
        for cls in (
            E.SellError,
            E.AuthenticationError,
            E.ForbiddenError,
            E.NotFoundError,
            E.ValidationError,
            E.BadRequestError,
            E.RateLimitedError,
            E.ServerError,
            E.NetworkError,
            E.MalformedResponseError,
        )
    }
    assert list(kinds.values()) == [
        "error",
        "authentication",
        "forbidden",
        "not_found",
        "validation",
        "bad_request",
        "rate_limited",
        "server",
        "network",
        "malformed",
    ]


ENTRY = {
    "code": "incorrect_value",
    "message": "value is incorrect",
    "details": "not a choice",
    "resource": "lead",
    "field": "/custom_fields/Promo",
    "raw_field": "/data/custom_fields/Promo",
}


def test_the_full_text_of_an_error():
    """Planted bugs: a part dropped or reordered, ``or`` for ``and`` around method/path,
    ``is None`` flipped for the status, ``>= 1``/``> 2`` for the attempts, another joiner."""
    err = E.ServerError(
        "Sell server error",
        status=503,
        logref="lr-1",
        errors=[ENTRY],
        method="GET",
        path="/v2/leads",
        attempts=3,
    )
    assert str(err) == (
        "Sell server error (GET /v2/leads) [HTTP 503] after 3 attempts"
        " - incorrect_value /custom_fields/Promo: not a choice (logref lr-1)"
    )
    assert repr(err) == f"ServerError({str(err)!r})"
    assert err.args == ("Sell server error",)
    assert (err.status, err.logref, err.method, err.path, err.attempts) == (
        503,
        "lr-1",
        "GET",
        "/v2/leads",
        3,
    )
    assert (err.code, err.field, err.details) == (
        "incorrect_value",
        "/custom_fields/Promo",
        "not a choice",
    )


def test_the_short_text_of_an_error():
    """Planted bugs: attempts defaulting to 2 (``after 2 attempts`` on a first failure),
    a method without a path printed, ``[HTTP None]`` for a network error."""
    assert str(E.NetworkError("could not reach Sell", method="GET")) == "could not reach Sell"
    assert str(E.SellError("m", path="/v2/x")) == "m"
    assert str(E.SellError("m", status=404, attempts=2)) == "m [HTTP 404] after 2 attempts"
    err = E.SellError("m")
    assert err.attempts == 1 and err.errors == [] and err.status is None
    assert (err.code, err.field, err.details) == (None, None, None)
    errors = [ENTRY]
    assert E.SellError("m", errors=errors).errors is not errors  # a copy


def test_summary_of_many_errors():
    """Planted bugs: ``len(errors) >= limit`` (an "and 0 more"), ``+ limit``, the message
    not used when details are missing, ``head and text`` for a code-only entry."""
    three = [
        {"code": f"c{i}", "field": None, "details": None, "message": f"m{i}"} for i in range(3)
    ]
    assert E.summarize_errors(three) == "c0: m0; c1: m1; c2: m2"
    five = three + [{"code": "c3"}, {"code": "c4"}]
    assert E.summarize_errors(five) == "c0: m0; c1: m1; c2: m2; and 2 more"
    assert E.summarize_errors(five, limit=4) == "c0: m0; c1: m1; c2: m2; c3; and 1 more"
    assert E.summarize_errors([{"code": "only_code"}]) == "only_code"
    assert E.summarize_errors([{"message": "only message"}]) == "only message"
    assert E.summarize_errors([{}, {"details": "d"}]) == "d"
    assert E.summarize_errors([]) == ""


@pytest.mark.parametrize(
    ("field", "pointer"),
    [
        (None, None),
        ("", None),
        ("email", "/email"),
        ("/email", "/email"),
        ("/data", "/"),
        ("/data/custom_fields/Promo", "/custom_fields/Promo"),
        ("/database", "/database"),
        ("data/email", "/email"),
    ],
)
def test_normalize_pointer(field, pointer):
    """Planted bugs: ``and`` for ``or`` (an empty field becomes ``/``), ``/data`` not
    mapped to the root, a prefix test without the slash (``/database`` -> ``base``)."""
    assert E.normalize_pointer(field) == pointer


def test_snippet_length_boundary_and_bytes():
    """Planted bugs: ``>= limit`` (a 200-character text gets an ellipsis), ``limit + 1`` /
    ``limit - 2`` (the snippet is not exactly ``limit`` long), bytes not decoded."""
    exact = "x" * 200
    assert E.text_snippet(exact) == exact
    cut = E.text_snippet("y" * 201)
    assert cut == "y" * 199 + "…" and len(cut) == 200
    assert E.text_snippet("abcdef", limit=4) == "abc…"
    assert E.text_snippet(b"<p>caf\xc3\xa9\xff &amp; co</p>") == "café\ufffd & co"
    assert E.text_snippet("<script>var token='x'</script>  Bad\n\tGateway  ") == "Bad Gateway"


def test_error_entries_keep_every_attribute_as_text():
    """Planted bugs: ``resource`` dropped or renamed; ``None`` turned into ``"None"``."""
    _, errs, _ = E.parse_error_body(
        json.dumps(
            {
                "errors": [
                    {
                        "error": {
                            "code": 42,
                            "message": "m",
                            "resource": "contact",
                            "field": "/data/email",
                        }
                    }
                ]
            }
        )
    )
    assert errs == [
        {
            "code": "42",
            "message": "m",
            "details": None,
            "resource": "contact",
            "field": "/email",
            "raw_field": "/data/email",
        }
    ]


def test_error_bodies_in_odd_shapes():
    """Planted bugs: a single ``errors`` object not wrapped in a list, a non-dict item
    stopping the loop (``break``) or kept as None, ``{"error": {...}}`` read as a string,
    a str body refused, a whitespace body parsed as JSON."""
    _, errs, snippet = E.parse_error_body(b'{"errors": {"code": "single", "field": "email"}}')
    assert [(e["code"], e["field"]) for e in errs] == [("single", "/email")] and snippet == ""
    body = {"errors": ["plain text", None, 7, {"error": {"code": "later"}}]}
    _, errs, _ = E.parse_error_body(json.dumps(body).encode())
    assert [(e["code"], e["message"]) for e in errs] == [
        (None, "plain text"),
        (None, "7"),
        ("later", None),
    ]
    _, errs, _ = E.parse_error_body('{"error": {"code": "c", "message": "m"}}')
    assert [(e["code"], e["message"]) for e in errs] == [("c", "m")]
    assert E.parse_error_body(b"  \n ", "rid") == ("rid", [], "")
    assert E.parse_error_body(b"null") == (None, [], "null")
    assert E.parse_error_body(b'[1,"a"]') == (None, [], '[1, "a"]')  # JSON, but not an envelope
    logref, errs, snippet = E.parse_error_body(b'{"meta": {"logref": "abc"}}', "header-id")
    assert (logref, errs, snippet) == ("abc", [], '{"meta": {"logref": "abc"}}')
    _, errs, snippet = E.parse_error_body(b"\xff\xfe not json")
    assert errs == [] and snippet == "\ufffd\ufffd not json"


def test_scrub_edges():
    """Planted bugs: ``or`` for ``and`` (an empty secret would splice ``****`` between
    every character; a None secret raises)."""
    assert E.scrub("abc", "") == "abc"
    assert E.scrub("abc", None) == "abc"
    assert E.scrub("", "tok") == ""
    assert E.scrub("tok and tok", "tok") == "**** and ****"


def test_scrub_runs_at_their_edges():
    """Planted bugs in the run scrubber: the token's last 8 characters or the text's
    last 8 not looked at (``range`` one short), touching runs not merged (``<`` for
    ``<=``: two masks side by side), a run's end or the text between runs miscounted,
    a short secret handled as runs."""
    secret = "abcdefghijklmnop"  # 16 characters: 9 runs of 8
    assert (
        E.scrub(f"x {secret[-8:]}", secret) == "x ****"
    )  # the token's last run, at the text's end
    assert E.scrub(f"{secret[:8]} y", secret) == "**** y"  # the first run, at the text's start
    assert E.scrub(secret[:8] + secret[:8], secret) == "****"  # touching runs are one
    assert E.scrub(f"{secret[:8]}-{secret[8:]}", secret) == "****-****"
    assert E.scrub(f"<{secret[2:11]}>", secret) == "<****>"  # 9 characters: one run, merged
    assert E.scrub(f"a{secret[:7]}b{secret[9:16]}c", secret) == f"a{secret[:7]}b{secret[9:16]}c"
    assert E.scrub(secret[:8], secret[:8]) == "****"  # a secret of exactly one run
    # ... and it is scrubbed as runs: two echoes side by side are one mask (planted bug:
    # ``<= SCRUB_RUN`` sends it to the whole-match path, which masks each echo apart)
    assert E.scrub(secret[:8] * 2, secret[:8]) == "****"
    assert E.scrub("abc1234567 1234567", "1234567") == "abc**** ****"  # shorter: whole matches only
