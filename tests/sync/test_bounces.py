"""rules/bounces.py: VERP tokens, bounce classification, the soft-bounce rule and Sell's
Sync error field (docs/delivery.md, "Bounces: tokens and classification"). Pure: table and
property tests over real Postfix DSNs (tests/samples/dsn/README.md says where each came from)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kuloo_daemon.rules import bounces
from kuloo_daemon.rules.bounces import (
    Accepted,
    Kind,
    VerpKind,
    VerpSigner,
    VerpToken,
    bounce_text,
    classify,
    classify_reply,
    classify_status,
    soft_bounces_count_as_hard,
    sync_error_field,
)

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "dsn"
OLD_KEY = b"an-old-link-signing-key-0123456789"
NEW_KEY = b"the-new-link-signing-key-9876543210"
KID = "aec51e5a161a7b8b6eea6be69b0711da"
SIGNER = VerpSigner([NEW_KEY, OLD_KEY])


def sample(name: str, **swap: str) -> bytes:
    text = (SAMPLES / name).read_text()
    for old, new in swap.items():
        text = text.replace(old, new)
    return text.encode()


# ----------------------------------------------------------------------------- tokens


def test_a_bounce_token_round_trips_and_fits_an_smtp_local_part():
    local = SIGNER.bounce(KID, 2**63 - 1)
    assert local == local.lower() and len(local) <= 64
    assert local.startswith(f"b-{KID}-")
    assert SIGNER.verify(local) == VerpToken(VerpKind.BOUNCE, KID, outbox_id=2**63 - 1)
    assert SIGNER.verify(f"{local}@bounces.example") == SIGNER.verify(local)


def test_unsubscribe_and_confirm_tokens_round_trip():
    assert SIGNER.verify(SIGNER.unsubscribe(KID) + "@b.example") == VerpToken(
        VerpKind.UNSUBSCRIBE, KID
    )
    assert SIGNER.verify(SIGNER.confirm(42)) == VerpToken(VerpKind.CONFIRM, channel=42)


def test_an_upper_cased_address_still_verifies():
    local = SIGNER.bounce(KID, 12345)
    assert SIGNER.verify(f"<{local.upper()}@BOUNCES.EXAMPLE>") == VerpToken(
        VerpKind.BOUNCE, KID, outbox_id=12345
    )


def test_the_newest_key_signs_and_an_old_key_still_verifies():
    old_only = VerpSigner([OLD_KEY])
    new_only = VerpSigner([NEW_KEY])
    mailed_last_year = old_only.bounce(KID, 7)
    assert SIGNER.verify(mailed_last_year) is not None  # rotation breaks no mail in flight
    assert SIGNER.bounce(KID, 7) == new_only.bounce(KID, 7)  # the first key signs
    assert SIGNER.bounce(KID, 7) != mailed_last_year
    assert new_only.verify(mailed_last_year) is None  # a retired key verifies nothing


def _flip(local: str, index: int) -> str:
    """``local`` with one character changed to another of its segment's alphabet."""
    segment = local[:index].count("-")
    last = segment == local.count("-")
    alphabet = (
        "abcdefghijklmnopqrstuvwxyz234567"
        if last
        else ("0123456789abcdef" if segment == 1 else "0123456789abcdefghijklmnopqrstuvwxyz")
    )
    c = local[index]
    other = alphabet[(alphabet.index(c) + 1) % len(alphabet)]
    return local[:index] + other + local[index + 1 :]


def test_forged_truncated_and_respelled_tokens_are_refused():
    local = SIGNER.bounce(KID, 12345)
    for i in range(2, len(local)):
        if local[i] != "-":
            assert SIGNER.verify(_flip(local, i)) is None, i
    assert SIGNER.verify(local[:-1]) is None
    assert SIGNER.verify(local + "a") is None
    other = VerpSigner([b"somebody-else-s-key-0123456789"])
    assert SIGNER.verify(other.bounce(KID, 12345)) is None
    # the same outbox id with a leading zero: a second spelling, refused even though a MAC
    # over it could be computed by whoever holds the key (we never sign one)
    mac = SIGNER._mac(0, f"b-{KID}-09ix")
    assert SIGNER.verify(f"b-{KID}-09ix-{mac}") is None
    assert SIGNER.verify(f"b-{KID}-9ix-{SIGNER._mac(0, f'b-{KID}-9ix')}") is not None


def test_one_kind_of_token_is_never_another():
    u = SIGNER.unsubscribe(KID)
    mac = u.rsplit("-", 1)[1]
    assert SIGNER.verify(f"c-1-{mac}") is None
    assert SIGNER.verify(f"b-{KID}-1-{mac}") is None


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "b",
        "b--",
        "postmaster",
        "b-xyz-1-aaaaaaaaaaaaa",
        "B-" + "F" * 40 + "-1-AAAAAAAAAAAAA",
        "\x00",
        "a" * 400,
    ],
)
def test_junk_is_no_token(junk):
    assert SIGNER.verify(junk) is None


def test_short_keys_and_unsignable_ids_are_refused():
    with pytest.raises(ValueError):
        VerpSigner([b"short"])
    with pytest.raises(ValueError):
        VerpSigner([])
    with pytest.raises(ValueError):
        SIGNER.bounce("Not-Hex", 1)
    with pytest.raises(ValueError):
        SIGNER.bounce(KID, -1)
    assert "key" in repr(SIGNER) and NEW_KEY.decode() not in repr(SIGNER)


@settings(max_examples=200, deadline=None)
@given(
    kid=st.text("0123456789abcdef", min_size=1, max_size=32),
    outbox=st.integers(min_value=0, max_value=2**64),
    upper=st.booleans(),
)
def test_every_bounce_token_round_trips(kid, outbox, upper):
    local = SIGNER.bounce(kid, outbox)
    assert len(local) <= 64 and local == local.lower()
    assert SIGNER.verify(local.upper() if upper else local) == VerpToken(
        VerpKind.BOUNCE, kid, outbox_id=outbox
    )


# ----------------------------------------------------------------------------- classification

POSTFIX = [
    (
        "failed-5.1.1-nosuch.user_mx.kuloo.test.eml",
        Kind.HARD,
        "5.1.1",
        "nosuch.user@mx.kuloo.test",
        'unknown user: "nosuch.user"',
    ),
    (
        "failed-5.1.1-nosuch.virtual2_example.com.eml",
        Kind.HARD,
        "5.1.1",
        "nosuch.virtual2@example.com",
        'unknown user: "nosuch.virtual2@example.com"',
    ),
    (
        "failed-5.7.1-third_refuses.example.eml",
        Kind.MESSAGE,
        "5.7.1",
        "third@refuses.example",
        "refuses.example does not accept mail from this sender",
    ),
    (
        "failed-5.7.1-other_refuses.example.eml",
        Kind.MESSAGE,
        "5.7.1",
        "other@refuses.example",
        "refuses.example does not accept mail from this sender",
    ),
    (
        "failed-5.1.1-gone.user_remote550.example.eml",
        Kind.HARD,
        "5.1.1",
        "gone.user@remote550.example",
        "550 5.1.1 <gone.user@remote550.example>: Recipient address rejected: User unknown in "
        "virtual mailbox table",
    ),
    (
        "delayed-4.2.1-busy.user_remote450.example.eml",
        Kind.DELAYED,
        "4.2.1",
        "busy.user@remote450.example",
        "450 4.2.1 <busy.user@remote450.example>: mailbox temporarily unavailable",
    ),
    (
        "verp-failed-5.1.1-to-b-c1d2e3f4.tok_bounces.example.eml",
        Kind.HARD,
        "5.1.1",
        "gone.verp@remote550.example",
        "550 5.1.1 <gone.verp@remote550.example>: Recipient address rejected: User unknown in "
        "virtual mailbox table",
    ),
]


@pytest.mark.parametrize("name, kind, status, recipient, reason", POSTFIX)
def test_each_real_postfix_dsn_is_classified(name, kind, status, recipient, reason):
    got = classify(sample(name), SIGNER)
    assert (got.kind, got.status, got.recipient, got.reason) == (kind, status, recipient, reason)
    assert got.token is None  # sent from news@ (or a made-up VERP token): nobody is named


def test_a_dsn_to_a_genuine_verp_address_names_the_user_and_the_message():
    local = SIGNER.bounce(KID, 4242)
    raw = sample(
        "verp-failed-5.1.1-to-b-c1d2e3f4.tok_bounces.example.eml",
        **{"b-c1d2e3f4.tok": local.upper()},
    )
    got = classify(raw, SIGNER)
    assert got.kind is Kind.HARD and got.kuloo_id == KID and got.outbox_id == 4242


def test_the_original_return_path_is_read_when_the_envelope_lost_the_token():
    local = SIGNER.bounce(KID, 99)
    text = sample("verp-failed-5.1.1-to-b-c1d2e3f4.tok_bounces.example.eml").decode()
    head, sep, tail = text.partition("Return-Path: <b-c1d2e3f4.tok@bounces.example>")
    raw = (head + sep.replace("b-c1d2e3f4.tok", local) + tail).encode()
    got = classify(raw, SIGNER)
    assert got.outbox_id == 99


def test_a_forged_verp_address_names_nobody():
    local = SIGNER.bounce(KID, 4242)
    forged = local[:-1] + ("a" if local[-1] != "a" else "b")
    raw = sample(
        "verp-failed-5.1.1-to-b-c1d2e3f4.tok_bounces.example.eml", **{"b-c1d2e3f4.tok": forged}
    )
    assert classify(raw, SIGNER).token is None


def test_an_arf_report_is_a_complaint_attributed_through_the_original_headers():
    b, u = SIGNER.bounce(KID, 5), SIGNER.unsubscribe(KID)
    got = classify(sample("arf-abuse.synthetic.eml", **{"@@B@@": b, "@@U@@": u}), SIGNER)
    assert got.kind is Kind.COMPLAINT and got.token == VerpToken(VerpKind.BOUNCE, KID, 5)
    assert got.recipient == "reader@mailbox.example" and got.reason == "abuse"
    # only the List-Unsubscribe mailto carries a genuine token: still attributed
    got = classify(sample("arf-abuse.synthetic.eml", **{"@@B@@": "news", "@@U@@": u}), SIGNER)
    assert got.kind is Kind.COMPLAINT and got.token == VerpToken(VerpKind.UNSUBSCRIBE, KID)
    got = classify(sample("arf-abuse.synthetic.eml", **{"@@B@@": "x", "@@U@@": "y"}), SIGNER)
    assert got.kind is Kind.COMPLAINT and got.token is None


def test_a_non_dsn_bounce_uses_flufl_for_the_address_and_the_text_for_the_status():
    local = SIGNER.bounce(KID, 77)
    got = classify(sample("exim-failed.synthetic.eml", **{"@@B@@": local}), SIGNER)
    assert (got.kind, got.status, got.recipient, got.outbox_id) == (
        Kind.HARD,
        "5.1.1",
        "gone@exim.example",
        77,
    )


def test_mail_to_a_u_address_is_an_unsubscribe():
    u = SIGNER.unsubscribe(KID)
    raw = (
        f"From: reader@mailbox.example\r\nTo: {u.upper()}@BOUNCES.EXAMPLE\r\n"
        "Subject: unsubscribe\r\n\r\nplease\r\n"
    ).encode()
    got = classify(raw, SIGNER)
    assert got.kind is Kind.UNSUBSCRIBE and got.token == VerpToken(VerpKind.UNSUBSCRIBE, KID)
    auto = raw.replace(b"Subject:", b"Auto-Submitted: auto-replied\r\nSubject:")
    assert classify(auto, SIGNER).kind is Kind.UNKNOWN  # RFC 3834: an auto-reply is no request
    forged = u[:-1] + ("a" if u[-1] != "a" else "b")
    raw = raw.replace(u.upper().encode(), forged.encode())
    assert classify(raw, SIGNER).kind is Kind.UNKNOWN


def _dsn(action: str, status: str, diagnostic: str = "", note: str = "") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example\r\nTo: news@kuloo-demo.test\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BB"\r\n\r\n'
        f"--BB\r\nContent-Type: text/plain\r\n\r\n{note}\r\n"
        "--BB\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n"
        f"\r\nFinal-Recipient: rfc822; x@y.example\r\nAction: {action}\r\nStatus: {status}\r\n"
        + (f"Diagnostic-Code: smtp; {diagnostic}\r\n" if diagnostic else "")
        + "\r\n--BB--\r\n"
    ).encode()


@pytest.mark.parametrize(
    "action, status, diagnostic, note, kind",
    [
        ("failed", "5.1.1", "550 5.1.1 no such user", "", Kind.HARD),
        ("failed", "5.1.10", "550 5.1.10 null MX", "", Kind.HARD),
        ("failed", "5.2.1", "550 5.2.1 mailbox disabled", "", Kind.HARD),
        ("failed", "5.2.2", "552 5.2.2 mailbox full", "", Kind.SOFT),
        ("failed", "4.4.7", "", "", Kind.SOFT),
        ("failed", "5.7.1", "550 5.7.1 spam", "", Kind.MESSAGE),
        ("failed", "5.3.0", "", "", Kind.MESSAGE),
        ("failed", "5.4.4", "", "", Kind.MESSAGE),
        ("failed", "5.2.3", "552 5.2.3 too big", "", Kind.MESSAGE),
        ("failed", "5.0.0", "550 rejected", "(in reply to RCPT TO command)", Kind.HARD),
        ("failed", "5.0.0", "553 no", "(in reply to RCPT TO command)", Kind.HARD),
        ("failed", "5.0.0", "554 no", "(in reply to RCPT TO command)", Kind.MESSAGE),
        ("failed", "5.0.0", "550 rejected", "(in reply to end of DATA command)", Kind.MESSAGE),
        ("failed", "", "550 5.1.1 no such user", "", Kind.HARD),  # Status missing: the code's
        ("delayed", "4.2.1", "450 busy", "", Kind.DELAYED),
        ("delayed", "5.1.1", "", "", Kind.DELAYED),
        ("delivered", "2.0.0", "250 ok", "", Kind.UNKNOWN),
        ("failed", "2.0.0", "", "", Kind.UNKNOWN),
    ],
)
def test_dsn_status_table(action, status, diagnostic, note, kind):
    assert classify(_dsn(action, status, diagnostic, note), SIGNER).kind is kind


@pytest.mark.parametrize(
    "status, basic, at_rcpt, kind",
    [
        ("5.2.2", "552", True, Kind.SOFT),
        ("5.2.1", "550", True, Kind.HARD),
        ("5.1.0", "", False, Kind.HARD),
        ("", "550", True, Kind.HARD),
        ("", "551", True, Kind.HARD),
        ("", "550", False, Kind.MESSAGE),
        ("", "552", True, Kind.MESSAGE),
        ("4.2.2", "452", True, Kind.SOFT),
        ("", "", True, Kind.UNKNOWN),
    ],
)
def test_status_table(status, basic, at_rcpt, kind):
    assert classify_status(status, basic, at_rcpt) is kind


@pytest.mark.parametrize(
    "code, text, stage, kind, status",
    [
        (550, "mailbox unavailable", "rcpt", Kind.HARD, "550"),
        (550, "5.1.1 no such user", "rcpt", Kind.HARD, "5.1.1"),
        (550, "5.0.0 no", "rcpt", Kind.HARD, "550"),
        (550, "5.7.1 relaying denied", "rcpt", Kind.MESSAGE, "5.7.1"),
        (550, "sender rejected", "mail", Kind.MESSAGE, "550"),
        (550, "content rejected", "data", Kind.MESSAGE, "550"),
        (552, "5.2.2 over quota", "rcpt", Kind.SOFT, "5.2.2"),
        (450, "4.2.1 try later", "rcpt", Kind.DELAYED, "4.2.1"),
        (421, "closing", "mail", Kind.DELAYED, "421"),
        (250, "ok", "rcpt", Kind.UNKNOWN, "250"),
    ],
)
def test_smtp_reply_table(code, text, stage, kind, status):
    got = classify_reply(code, text, stage)
    assert (got.kind, got.status) == (kind, status)


def _truncated() -> bytes:
    raw = sample("failed-5.1.1-gone.user_remote550.example.eml")
    return raw[: raw.index(b"Content-Type: message/delivery-status") + 20]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage \x80\x81" * 100,
        bytes(range(256)) * 50,
        b"Subject: hello\r\n\r\njust a letter\r\n",
        _truncated(),
        sample("failed-5.1.1-gone.user_remote550.example.eml")
        .replace(b"Content-Type: message/delivery-status", b"Content-Type: text/plain")
        .replace(b"550 5.1.1", b"")
        .replace(b"5.1.1", b""),  # no delivery-status, no status
        b"X-Long: " + b"a" * 2_000_000 + b"\r\n\r\nbody",
        b"".join(b"X-H%d: v\r\n" % i for i in range(50_000)) + b"\r\nbody",
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nno boundary",
        b'Content-Type: multipart/report; boundary="x"\r\n\r\n--x\r\n'
        b"Content-Type: message/delivery-status\r\n\r\n\r\n--x--",
        b'Content-Type: multipart/report; boundary="x"\r\n\r\n--x\r\n'
        b"Content-Type: message/delivery-status\r\n\r\nAction: \xff\xfe\r\nStatus: \x00\r\n--x--",
        b"A" * (bounces.MAX_MESSAGE_BYTES + 1),
    ],
)
def test_malformed_input_is_unknown_never_an_exception(raw):
    got = classify(raw, SIGNER)
    assert got.kind is Kind.UNKNOWN
    assert "\n" not in got.reason and len(got.reason) <= 200


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=3000))
def test_any_bytes_classify_without_raising(raw):
    got = classify(raw, SIGNER)
    assert got.kind in Kind and "\n" not in got.reason and len(got.reason) <= 200


@settings(max_examples=100, deadline=None)
@given(cut=st.integers(min_value=0, max_value=7000))
def test_any_truncation_of_a_real_dsn_classifies_without_raising(cut):
    raw = sample("failed-5.1.1-gone.user_remote550.example.eml")[:cut]
    assert classify(raw, SIGNER).kind in (Kind.HARD, Kind.UNKNOWN)


def test_a_remote_reason_is_cleaned_to_one_short_line():
    evil = "550 5.1.1 gone\u202e\x1b[31m" + "x" * 500
    got = classify(_dsn("failed", "5.1.1", evil), SIGNER)
    assert "\u202e" not in got.reason and "\x1b" not in got.reason
    assert len(got.reason) == 200 and got.reason.endswith("…")


# ----------------------------------------------------------------------------- soft bounces

NOW = datetime(2026, 12, 7, 12, tzinfo=UTC)


def days(n: float) -> datetime:
    return NOW - timedelta(days=n)


@pytest.mark.parametrize(
    "soft, accepted, hard",
    [
        ([days(8), days(6), days(4), days(2), days(1)], [], True),  # 5 over 7 days
        ([days(7), days(5), days(3), days(2), days(0)], [], True),  # exactly 7 days
        ([days(6), days(5), days(3), days(2), days(0)], [], False),  # 5 within 6 days
        ([days(8), days(6), days(4), days(2)], [], False),  # only 4
        # a success between them (accepted 5 days ago, never bounced) starts the count again
        ([days(8), days(6), days(4), days(2), days(1)], [Accepted(days(5))], False),
        # accepted 5 days ago but it bounced: no success
        ([days(8), days(6), days(4), days(2), days(1)], [Accepted(days(5), bounced=True)], True),
        # accepted 2 days ago: not yet known to be delivered (< 72 h)
        ([days(8), days(6), days(4), days(2.5), days(1)], [Accepted(days(2))], True),
        # a success before all of them changes nothing
        ([days(8), days(6), days(4), days(2), days(1)], [Accepted(days(9))], True),
        ([], [], False),
    ],
)
def test_soft_bounce_rule(soft, accepted, hard):
    assert soft_bounces_count_as_hard(soft, accepted, NOW) is hard


def test_soft_limit_and_soft_days_are_the_callers():
    soft = [days(3), days(2), days(1)]
    assert soft_bounces_count_as_hard(soft, [], NOW, soft_limit=3, soft_days=2)
    assert not soft_bounces_count_as_hard(soft, [], NOW, soft_limit=3, soft_days=3)
    assert not soft_bounces_count_as_hard(soft, [], NOW, soft_limit=4, soft_days=1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=60), max_size=12),
    st.lists(st.tuples(st.floats(min_value=0, max_value=60), st.booleans()), max_size=6),
)
def test_soft_bounce_rule_properties(soft_days_ago, accepted_days_ago):
    soft = [days(d) for d in soft_days_ago]
    accepted = [Accepted(days(d), b) for d, b in accepted_days_ago]
    hard = soft_bounces_count_as_hard(soft, accepted, NOW)
    if len(soft) < 5:
        assert not hard
    # only never-bounced acceptances of at least 72 h ago can stop the count
    assert soft_bounces_count_as_hard(soft, [], NOW) >= hard
    recent_or_bounced = [a for a in accepted if a.bounced or a.at > NOW - timedelta(hours=72)]
    assert soft_bounces_count_as_hard(soft, recent_or_bounced, NOW) == soft_bounces_count_as_hard(
        soft, [], NOW
    )


# ----------------------------------------------------------------------------- Sell's field


def test_the_bounce_text_and_the_sync_error_share_one_field():
    text = bounce_text("5.1.1", "User unknown", datetime(2026, 12, 7, 9, tzinfo=UTC))
    assert text == "Email bounced: 5.1.1 User unknown (2026-12-07)"
    assert sync_error_field(None, text) == text
    assert sync_error_field("Plan cap reached", None) == "Plan cap reached"
    assert sync_error_field("Plan cap reached", text) == f"Plan cap reached · {text}"
    assert sync_error_field("", "") == ""


def test_a_long_sync_error_is_shortened_and_the_bounce_kept_whole():
    text = bounce_text("5.1.1", "r" * 300, datetime(2026, 12, 7, tzinfo=UTC))
    assert len(text) <= 250 and text.endswith("(2026-12-07)")
    field = sync_error_field("e\n" * 400, text)
    assert len(field) <= 250 and "\n" not in field and field.endswith(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400), st.text(max_size=300), st.text(max_size=30))
def test_the_field_is_always_one_clean_line_of_at_most_250(error, reason, status):
    field = sync_error_field(error, bounce_text(status, reason, NOW))
    assert len(field) <= 250 and "\n" not in field and "\r" not in field
    assert "Email bounced: " in field


# ----------------------------------------------------------------------------- boundaries
# (found by `make mutate`: mutants of rules/bounces.py that the tests above let live)


def test_key_and_id_limits_are_exact():
    VerpSigner([b"k" * 16])
    with pytest.raises(ValueError):
        VerpSigner([b"k" * 16, b"k" * 15])
    assert SIGNER.verify(SIGNER.confirm(10**17 * 9)) == VerpToken(
        VerpKind.CONFIRM, channel=10**17 * 9
    )
    assert SIGNER.verify(SIGNER.confirm(0)) == VerpToken(VerpKind.CONFIRM, channel=0)
    for bad in (-1, 10**18):
        with pytest.raises(ValueError):
            SIGNER.confirm(bad)
    assert SIGNER.verify(SIGNER.bounce("0", 0)) == VerpToken(VerpKind.BOUNCE, "0", outbox_id=0)
    with pytest.raises(ValueError):
        SIGNER.unsubscribe("a" * 33)
    with pytest.raises(ValueError):
        SIGNER.bounce("a" * 33, 1)
    mac = SIGNER._mac(0, "c-07")
    assert SIGNER.verify(f"c-07-{mac}") is None  # a second spelling of channel 7


def test_addresses_up_to_320_characters_are_read_and_padding_is_ignored():
    local = SIGNER.bounce(KID, 1)
    host = "h" * (320 - len(local) - 1)
    assert SIGNER.verify(f"{local}@{host}") is not None
    assert SIGNER.verify(f"{local}@{host}h") is None
    assert SIGNER.verify(f"  <{local}@x.example>  ") is not None


@pytest.mark.parametrize(
    "status, basic, at_rcpt, kind",
    [
        ("4.0.0", "", False, Kind.SOFT),
        ("", "421", False, Kind.SOFT),
        ("5.0.0", "", True, Kind.MESSAGE),
        ("5.0.0", "550", True, Kind.HARD),
        ("5.0.0", "553", False, Kind.MESSAGE),
        ("2.1.5", "", True, Kind.UNKNOWN),
        ("5.1.0.", "", True, Kind.UNKNOWN),
        (" 5.1.1 ", "", False, Kind.HARD),
        ("5.5.0", "550", True, Kind.MESSAGE),
    ],
)
def test_status_edges(status, basic, at_rcpt, kind):
    assert classify_status(status, basic, at_rcpt) is kind


def test_a_reply_keeps_its_text_and_code_in_the_reason():
    got = classify_reply(550, "5.1.1 <x@y.example>: no such\r\nuser", "rcpt")
    assert got.reason == "550 5.1.1 <x@y.example>: no such user"
    assert classify_reply(600, "x", "rcpt").kind is Kind.UNKNOWN
    assert classify_reply(399, "x", "rcpt").kind is Kind.UNKNOWN
    assert classify_reply(400, "x", "rcpt").kind is Kind.DELAYED
    assert classify_reply(599, "x", "rcpt").kind is Kind.MESSAGE
    assert classify_reply(500, "5.1.1 x", "data").kind is Kind.HARD


def test_the_dsn_reason_status_and_recipient_fields():
    got = classify(_dsn("failed", "5.1.1"), SIGNER)
    assert (got.reason, got.recipient, got.status) == ("failed 5.1.1", "x@y.example", "5.1.1")
    got = classify(_dsn("failed", "5.0.0", "550 bad mailbox", "in reply to RCPT TO"), SIGNER)
    assert (got.kind, got.status, got.reason) == (Kind.HARD, "550", "550 bad mailbox")
    got = classify(_dsn("Failed", "5.1.1 (user unknown)", "550 x"), SIGNER)
    assert (got.kind, got.status) == (Kind.HARD, "5.1.1")
    raw = _dsn("failed", "5.1.1").replace(
        b"Final-Recipient: rfc822; x@y.example", b"Original-Recipient: rfc822;o@y.example"
    )
    assert classify(raw, SIGNER).recipient == "o@y.example"
    got = classify(_dsn("relayed", "2.0.0", "250 ok"), SIGNER)
    assert (got.kind, got.reason) == (Kind.UNKNOWN, "250 ok")


def test_a_dsn_with_two_recipients_reports_the_failed_one():
    raw = _dsn("delayed", "4.2.1", "450 later").replace(
        b"\r\n\r\n--BB--",
        b"\r\n\r\nFinal-Recipient: rfc822; z@y.example\r\nAction: failed\r\n"
        b"Status: 5.1.1\r\n\r\n--BB--",
    )
    got = classify(raw, SIGNER)
    assert (got.kind, got.recipient) == (Kind.HARD, "z@y.example")


def test_a_report_without_the_report_type_is_still_read_by_its_parts():
    b = SIGNER.bounce(KID, 5)
    raw = sample("arf-abuse.synthetic.eml", **{"@@B@@": b, "@@U@@": "u"}).replace(
        b"report-type=feedback-report;", b""
    )
    got = classify(raw, SIGNER)
    assert got.kind is Kind.COMPLAINT and got.outbox_id == 5


def test_a_complaint_without_original_rcpt_to_takes_the_originals_to():
    raw = sample("arf-abuse.synthetic.eml", **{"@@B@@": "x", "@@U@@": "y"}).replace(
        b"Original-Rcpt-To: <reader@mailbox.example>\n", b""
    )
    got = classify(raw, SIGNER)
    assert (got.kind, got.recipient, got.reason) == (
        Kind.COMPLAINT,
        "reader@mailbox.example",
        "abuse",
    )


def test_a_headers_only_original_still_gives_the_return_path():
    local = SIGNER.bounce(KID, 31)
    raw = sample("delayed-4.2.1-busy.user_remote450.example.eml").replace(
        b"Return-Path: <news@kuloo-demo.test>", f"Return-Path: <{local}@b.example>".encode()
    )
    got = classify(raw, SIGNER)
    assert (got.kind, got.outbox_id) == (Kind.DELAYED, 31)


@pytest.mark.parametrize("header", ["Delivered-To", "X-Original-To", "Envelope-To", "To"])
def test_the_token_is_found_in_each_envelope_header(header):
    local = SIGNER.bounce(KID, 8)
    raw = _dsn("failed", "5.1.1").replace(
        b"To: news@kuloo-demo.test", f"{header}: {local}@b.example".encode()
    )
    assert classify(raw, SIGNER).outbox_id == 8


def test_a_non_dsn_bounce_edges():
    local = SIGNER.bounce(KID, 77)
    raw = sample("exim-failed.synthetic.eml", **{"@@B@@": local})
    got = classify(raw, SIGNER)
    assert got.reason == "550 5.1.1 <gone@exim.example>: Recipient address rejected: User unknown"
    no_status = raw.replace(b"550 5.1.1 ", b"")
    got = classify(no_status, SIGNER)
    assert (got.kind, got.recipient, got.outbox_id) == (Kind.UNKNOWN, "gone@exim.example", 77)
    policy = raw.replace(b"550 5.1.1", b"550 5.7.1")
    assert classify(policy, SIGNER).kind is Kind.MESSAGE
    bare = raw.replace(b"550 5.1.1 ", b"550 ")
    assert (classify(bare, SIGNER).kind, classify(bare, SIGNER).status) == (Kind.HARD, "550")
    data = bare.replace(b"after RCPT TO:", b"after end of data:")
    assert classify(data, SIGNER).kind is Kind.MESSAGE


def test_the_field_edges():
    at = datetime(2026, 1, 2, tzinfo=UTC)
    assert bounce_text("", "gone", at) == "Email bounced: gone (2026-01-02)"
    assert bounce_text("5.1.1" + "9" * 30, "", at).startswith("Email bounced: 5.1.1" + "9" * 14)
    tail = "t" * 246
    assert sync_error_field("error", tail) == tail  # no room for even one character
    assert sync_error_field("ab", "t" * 245) == "ab · " + "t" * 245  # exactly 250
    assert sync_error_field("abc", "t" * 245) == "a… · " + "t" * 245
    assert sync_error_field(" e\x1b\n ", None) == "e"
    assert len(sync_error_field("e" * 300, None)) == 250


def test_reply_and_status_defaults_and_reasons():
    assert classify_reply(550, "5.1.1 sender unknown", "mail").kind is Kind.MESSAGE
    assert classify_reply(451, "later", "rcpt").reason == "451 later"
    assert classify_reply(550, "no", "mail").reason == "550 no"
    assert classify_reply(700, "odd", "rcpt").reason == "700 odd"
    assert classify_reply(600, "odd", "rcpt").kind is Kind.UNKNOWN
    assert classify_status("", "550") is Kind.MESSAGE  # not at RCPT unless the caller says so
    assert classify_status("5.0.0") is Kind.MESSAGE


def test_the_soft_rule_boundaries_are_inclusive():
    soft = [days(8), days(6), days(4), days(2), days(1)]
    exactly_72h = NOW - timedelta(hours=72)
    assert not soft_bounces_count_as_hard(soft, [Accepted(exactly_72h)], NOW)
    # a soft bounce at the very moment of the success does not count after it
    assert not soft_bounces_count_as_hard(
        [days(10), days(9), days(6), days(3), days(2)], [Accepted(days(10))], NOW
    )
    assert soft_bounces_count_as_hard(
        [days(10), days(9), days(6), days(3), days(2)],
        [Accepted(days(10) - timedelta(seconds=1))],
        NOW,
    )


def test_reason_texts_keep_their_semicolons_and_exact_length():
    got = classify(_dsn("failed", "5.1.1", "550 5.1.1 a;b"), SIGNER)
    assert got.reason == "550 5.1.1 a;b"
    raw = _dsn("failed", "5.1.1").replace(
        b"Final-Recipient: rfc822; x@y.example", b"Final-Recipient: x@y.example"
    )
    assert classify(raw, SIGNER).recipient == "x@y.example"
    exact = "550 5.1.1 " + "x" * 190
    assert classify(_dsn("failed", "5.1.1", exact), SIGNER).reason == exact
