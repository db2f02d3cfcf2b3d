"""rules/bounces.py over real bounces and feedback reports from other senders' formats
(Gmail, Hotmail/Outlook.com, Yahoo, Exim, qmail, Sendmail, two feedback loops; where each
came from: tests/samples/dsn/README.md), with and without a genuine VERP token, with a
forged one, and mutilated: every one is classified, none raises (docs/delivery.md)."""

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kuloo_daemon.rules import bounces
from kuloo_daemon.rules.bounces import Kind, VerpKind, VerpSigner, VerpToken, classify

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
KEY = b"the-link-signing-key-for-samples-0123"
SIGNER = VerpSigner([KEY])
KID = "5e1f0c2a9b7d4e6f8a1b2c3d4e5f6a7b"
DOMAIN = "bounces.kuloo.example"


@dataclass(frozen=True)
class Case:
    path: str  # under tests/samples/
    kind: Kind
    status: str
    recipient: str
    sender: str  # the original envelope sender: where Kuloo's VERP address would stand
    reason: str = ""  # "" = not checked here
    mime_original: bool = True  # the original comes back as a MIME part (else as text)


CASES = [
    Case(
        "dsn/gmail-failed-5.1.1-plain-text.eml",
        Kind.HARD,
        "5.1.1",
        "aougoueioaldljgoiuiorghladkgke@example.fr",
        "this-local-part-does-not-exist-on-google-mail@gmail.com",
        "550 550 5.1.1 user unknown (UserSearch) (state 14).",
        mime_original=False,
    ),
    Case(
        "dsn/gmail-failed-quota-no-status.eml",
        Kind.UNKNOWN,
        "",
        "neko-nyaan@google.example.com",
        "kijitora@example.net",
        "a bounce with no status",
        mime_original=False,
    ),
    Case(
        "dsn/hotmail-failed-5.2.2-mailbox-full.eml",
        Kind.SOFT,
        "5.2.2",
        "kijitora@example.jp",
        "shironeko@hotmail.example.com",
        "550 5.2.2 <kijitora@example.jp>... Mailbox Full",
    ),
    Case(
        "dsn/yahoo-failed-5.7.9-policy.crlf.eml",
        Kind.MESSAGE,
        "5.7.9",
        "kijitora@aol.example.jp",
        "postmaster@sisimai.example.com",
        "554 5.7.9 Message not accepted for policy reasons. See "
        "https://postmaster.verizonmedia.com/error-codes",
    ),
    Case(
        "dsn/exim-failed-5.1.1-two-recipients.eml",
        Kind.HARD,
        "5.1.1",
        "kijitora@example.jp",
        "shironeko@example.jp",
        "550 5.1.1 <kijitora@example.jp>... User Unknown",
        mime_original=False,
    ),
    Case(
        "dsn/qmail-failed-550-at-rcpt.eml",
        Kind.HARD,
        "550",
        "kijitora@example.ne.jp",
        "nekochan@example.jp",
        "550 Unknown user kijitora@example.ne.jp",
        mime_original=False,
    ),
    Case(
        "dsn/sendmail-failed-5.1.1.eml",
        Kind.HARD,
        "5.1.1",
        "userunknown@bouncehammer.jp",
        "kijitora@example.org",
        "550 5.1.1 <userunknown@bouncehammer.jp>... User Unknown",
    ),
    Case("arf/returnpath-fbl-abuse.eml", Kind.COMPLAINT, "", "", "kijitora@example.net", "abuse"),
    Case("arf/terra-fbl-abuse.eml", Kind.COMPLAINT, "", "", "fake.sender@example.net", "abuse"),
    # the Postfix DSNs for mail this daemon sent (tests/sync/test_bounces.py reads them too)
    Case(
        "dsn/failed-5.1.1-gone.user_remote550.example.eml",
        Kind.HARD,
        "5.1.1",
        "gone.user@remote550.example",
        "news@kuloo-demo.test",
    ),
    Case(
        "dsn/failed-5.7.1-third_refuses.example.eml",
        Kind.MESSAGE,
        "5.7.1",
        "third@refuses.example",
        "news@kuloo-demo.test",
    ),
    Case(
        "dsn/delayed-4.2.1-busy.user_remote450.example.eml",
        Kind.DELAYED,
        "4.2.1",
        "busy.user@remote450.example",
        "news@kuloo-demo.test",
    ),
]
IDS = [Path(c.path).name for c in CASES]
REPORTS = [c for c in CASES if c.kind is not Kind.COMPLAINT]
FEEDBACK = [c for c in CASES if c.kind is Kind.COMPLAINT]


def raw(case: Case) -> bytes:
    return (SAMPLES / case.path).read_bytes()


def with_verp(data: bytes, sender: str, local: str, *, only: str = "") -> bytes:
    """The sample as if Kuloo had sent the original: ``sender`` (the original envelope
    sender) becomes ``local@DOMAIN`` everywhere, or only in header lines that start with
    ``only`` (``"Return-Path:"``: the envelope lost it, the returned headers kept it)."""
    address = f"{local}@{DOMAIN}".encode()
    if not only:
        return data.replace(sender.encode(), address)
    pattern = re.compile(rb"(?im)^(" + re.escape(only.encode()) + rb"[^\n]*)")
    return pattern.sub(lambda m: m[1].replace(sender.encode(), address), data)


# ----------------------------------------------------------------------------- the table


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_each_sample_is_read_as_its_sender_meant_it(case):
    got = classify(raw(case), SIGNER)
    assert (got.kind, got.status, got.recipient) == (case.kind, case.status, case.recipient)
    if case.reason:
        assert got.reason == case.reason
    # nobody sent these from a Kuloo VERP address: the report names no user and no message
    assert got.token is None and got.kuloo_id == "" and got.outbox_id is None


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_genuine_verp_sender_names_the_user_and_the_message(case):
    local = SIGNER.bounce(KID, 90210)
    got = classify(with_verp(raw(case), case.sender, local), SIGNER)
    assert (got.kind, got.status) == (case.kind, case.status)
    assert got.token == VerpToken(VerpKind.BOUNCE, KID, outbox_id=90210)
    # the recipient the report gives is kept as it is (the token, not it, names the user)
    assert got.recipient == case.recipient


@pytest.mark.parametrize("case", [c for c in REPORTS if c.mime_original], ids=str)
def test_the_returned_headers_attribute_a_bounce_whose_envelope_lost_the_token(case):
    local = SIGNER.bounce(KID, 7)
    got = classify(with_verp(raw(case), case.sender, local, only="Return-Path:"), SIGNER)
    assert got.kind is case.kind and got.outbox_id == 7


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_token_with_a_bad_mac_names_nobody_and_changes_nothing_else(case):
    local = SIGNER.bounce(KID, 90210)
    forged = local[:-1] + ("a" if local[-1] != "a" else "b")
    other_key = VerpSigner([b"somebody-else-s-link-signing-key"]).bounce(KID, 90210)
    for fake in (forged, other_key):
        got = classify(with_verp(raw(case), case.sender, fake), SIGNER)
        assert got.token is None, fake
        assert (got.kind, got.status, got.recipient) == (case.kind, case.status, case.recipient)


def test_a_confirmation_return_path_is_attributed_to_its_channel():
    case = CASES[0]
    got = classify(with_verp(raw(case), case.sender, SIGNER.confirm(12)), SIGNER)
    assert got.kind is Kind.HARD and got.token == VerpToken(VerpKind.CONFIRM, channel=12)


def test_an_unsubscribe_token_does_not_attribute_a_bounce():
    """A bounce names its message through a b- (or c-) return path; a u- address in the
    envelope of a DSN is no return path of ours, so the bounce stays unattributed."""
    case = CASES[2]
    got = classify(with_verp(raw(case), case.sender, SIGNER.unsubscribe(KID)), SIGNER)
    assert got.kind is Kind.SOFT and got.token is None


@pytest.mark.parametrize("case", FEEDBACK, ids=str)
def test_a_feedback_loop_report_is_a_complaint_attributed_through_the_original(case):
    b_local, u_local = SIGNER.bounce(KID, 31), SIGNER.unsubscribe(KID)
    got = classify(with_verp(raw(case), case.sender, b_local), SIGNER)
    assert (got.kind, got.token) == (Kind.COMPLAINT, VerpToken(VerpKind.BOUNCE, KID, 31))
    # only the returned message's Return-Path carries it
    only_rp = with_verp(raw(case), case.sender, b_local, only="Return-Path:")
    assert classify(only_rp, SIGNER).token == VerpToken(VerpKind.BOUNCE, KID, 31)
    # only the report's Original-Mail-From carries it (a provider that strips the original)
    only_omf = with_verp(raw(case), case.sender, b_local, only="Original-Mail-From:")
    assert classify(only_omf, SIGNER).token == VerpToken(VerpKind.BOUNCE, KID, 31)
    # a u- token in the original's List-Unsubscribe attributes it too
    data = raw(case).replace(
        b"\nReturn-Path:", f"\nList-Unsubscribe: <mailto:{u_local}@{DOMAIN}>\nReturn-Path:".encode()
    )
    got = classify(data, SIGNER)
    assert (got.kind, got.token) == (Kind.COMPLAINT, VerpToken(VerpKind.UNSUBSCRIBE, KID))


@pytest.mark.parametrize("case", FEEDBACK, ids=str)
def test_a_feedback_report_without_the_original_is_still_a_complaint(case):
    data = raw(case)
    cut = data.rindex(b"Content-Type: message/rfc822")
    boundary = data[: data.index(b"Content-Type: message/feedback-report")].rsplit(b"\n--", 1)
    headless = data[: data.rindex(b"\n--", 0, cut)] + b"\n--" + boundary[1].split(b"\n")[0]
    headless += b"--\n"
    got = classify(headless, SIGNER)
    assert got.kind is Kind.COMPLAINT and got.token is None and got.reason == "abuse"
    assert b"Return-Path" not in headless
    # the report's own Original-Mail-From still names the message when it is ours
    local = SIGNER.bounce(KID, 5)
    got = classify(with_verp(headless, case.sender, local), SIGNER)
    assert (got.kind, got.outbox_id) == (Kind.COMPLAINT, 5)


# ----------------------------------------------------------------------------- malformed


def _garbage_status(data: bytes) -> bytes:
    """The delivery-status part's fields replaced by noise."""
    return re.sub(
        rb"(?ims)(Content-Type: message/delivery-status\r?\n\r?\n).*?(\r?\n--)",
        lambda m: m[1] + b"\x00\xff garbage: \xfe\r\n\r\n:::\r\nno fields here" + m[2],
        data,
        count=1,
    )


@pytest.mark.parametrize("case", [c for c in REPORTS if c.mime_original], ids=str)
def test_a_delivery_status_part_of_garbage_is_unknown(case):
    data = _garbage_status(raw(case))
    assert data != raw(case)
    got = classify(data, SIGNER)
    assert got.kind is Kind.UNKNOWN and got.reason == "a delivery report with no recipient"


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_wrong_charset_label_hides_nothing(case):
    """Senders label parts with charsets Python does not know (Hotmail's
    ``unicode-1-1-utf-7``) or get them wrong: the verdict stays the same."""
    for label in (b"x-no-such-charset", b"utf-16", b"unicode-1-1-utf-7"):
        data = re.sub(rb'(?i)charset="?[\w.-]+"?', b"charset=" + label, raw(case))
        got = classify(data, SIGNER)
        assert (got.kind, got.status, got.recipient) == (case.kind, case.status, case.recipient)


# how much a verdict costs the user: a damaged report may say less, never more
HARSHNESS = {
    Kind.UNKNOWN: 0,
    Kind.DELAYED: 1,
    Kind.MESSAGE: 2,
    Kind.SOFT: 3,
    Kind.HARD: 4,
    Kind.UNSUBSCRIBE: 4,
    Kind.COMPLAINT: 4,
}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_a_truncated_sample_never_reads_harsher_than_the_whole(case):
    """A report cut short (a full disk, a broken transfer) is classified without raising
    and never costs the user more than the whole report would: a delay warning that lost
    its status part is not a soft bounce, a cut complaint is no hard bounce."""
    data = raw(case)
    for cut in range(0, len(data), max(1, len(data) // 60)):
        got = classify(data[:cut], SIGNER)
        assert HARSHNESS[got.kind] <= HARSHNESS[case.kind], (cut, got)
        if got.kind is not case.kind and case.kind is not Kind.UNKNOWN:
            assert got.kind is not Kind.COMPLAINT and got.kind is not Kind.HARD, (cut, got)
        assert "\n" not in got.reason and len(got.reason) <= bounces.MAX_REASON


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_mutilated_samples_classify_without_raising(case):
    data = raw(case)
    mutilated = [
        data.replace(b"\n", b"\r\r\n"),
        data.replace(b"\n\n", b"\n", 3),  # headers run into the body
        data.replace(b"--", b"-", 2),  # the boundaries no longer match
        re.sub(rb'boundary="?[^";\r\n]+"?', b"", data),  # no boundary at all
        data.replace(b"Content-Transfer-Encoding: 7bit", b"Content-Transfer-Encoding: base64"),
        data.replace(b"Content-Type:", b"Content-Type: \xff\xfe;", 1),
        data.replace(b"@", b"\x00@\xc3("),  # NUL and broken UTF-8 inside the addresses
        bytes(b ^ 0x80 for b in data),  # every byte's high bit flipped
        data[len(data) // 2 :],  # the first half lost
        data * 3,  # three reports end to end
    ]
    for i, m in enumerate(mutilated):
        got = classify(m, SIGNER)
        assert got.kind in Kind, i
        assert "\n" not in got.reason and len(got.reason) <= bounces.MAX_REASON, i


def test_a_real_dsn_returning_a_huge_message_is_unknown_without_being_parsed():
    case = CASES[2]
    data = raw(case)
    tail = data.rindex(b"\n--")
    huge = data[:tail] + b"\n" + b"x" * 76 * (bounces.MAX_MESSAGE_BYTES // 76 + 1) + data[tail:]
    assert len(huge) > 10 * 1024 * 1024
    got = classify(huge, SIGNER)
    assert (got.kind, got.reason) == (Kind.UNKNOWN, "too big to be a bounce")
    # just under the limit, it is read as a bounce
    fits = data[:tail] + b"\n" + b"x" * (bounces.MAX_MESSAGE_BYTES - len(data) - 1) + data[tail:]
    assert len(fits) == bounces.MAX_MESSAGE_BYTES
    assert classify(fits, SIGNER).kind is case.kind


@settings(max_examples=120, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=len(CASES) - 1),
    at=st.floats(min_value=0, max_value=1),
    junk=st.binary(min_size=1, max_size=64),
    drop=st.integers(min_value=0, max_value=200),
)
def test_junk_spliced_into_any_sample_never_raises(index, at, junk, drop):
    data = raw(CASES[index])
    i = int(at * len(data))
    got = classify(data[:i] + junk + data[i + drop :], SIGNER)
    assert got.kind in Kind and "\n" not in got.reason
    assert len(got.reason) <= bounces.MAX_REASON
