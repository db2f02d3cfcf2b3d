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


# ----------------------------------------------------------------------------- promises
# (each found by `make mutate`: a bug planted in rules/bounces.py that nothing caught)


def report(*blocks: str, envelope: str = "news@kuloo-demo.test", note: str = "") -> bytes:
    """A DSN to ``envelope`` with one per-recipient block per ``blocks`` (fields, one a line)."""
    fields = "".join(f"\r\n{b.strip()}\r\n" for b in blocks)
    return (
        f"From: MAILER-DAEMON@mx.example\r\nTo: {envelope}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="BB"\r\n\r\n'
        f"--BB\r\nContent-Type: text/plain\r\n\r\n{note}\r\n"
        "--BB\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n"
        f"{fields}\r\n--BB--\r\n"
    ).encode()


def verp(n: int = 4) -> tuple[str, VerpToken]:
    return f"{SIGNER.bounce(KID, n)}@{DOMAIN}", VerpToken(VerpKind.BOUNCE, KID, outbox_id=n)


def _unknowns() -> list[tuple[str, bytes, str, str, str]]:
    """(what, message to a genuine b- address, reason, status, recipient)."""
    address, _ = verp()
    local = address.partition("@")[0]
    exim, quota, qmail = CASES[4], CASES[1], CASES[5]
    return [
        (
            "a person's reply to the newsletter",
            f"From: reader@mailbox.example\r\nTo: {address}\r\nSubject: Re: news\r\n\r\n"
            "Thanks!\r\n".encode(),
            "not a bounce",
            "",
            "",
        ),
        (
            "Gmail's bounce that quotes no code",
            with_verp(raw(quota), quota.sender, local),
            "a bounce with no status",
            "",
            quota.recipient,
        ),
        (
            "a bounce whose only code is a success",
            with_verp(raw(exim), exim.sender, local)
            .replace(b"550 5.1.1", b"2.1.5")
            .replace(b"550 5.2.1", b"2.1.5"),
            "a bounce with no status",
            "",
            exim.recipient,
        ),
        (
            "a bounce flufl.bounce fails on (an empty From: makes its detector raise)",
            with_verp(raw(qmail), qmail.sender, local).replace(
                b"From: MAILER-DAEMON@mx4.example.jp", b"From: "
            ),
            "unreadable bounce",
            "",
            "",
        ),
        (
            "a delivery-status part of garbage",
            _garbage_status(report("Final-Recipient: rfc822; x@y.example", envelope=address)),
            "a delivery report with no recipient",
            "",
            "",
        ),
        (
            "a DSN cut before its status part",
            report("Final-Recipient: rfc822; x@y.example", envelope=address).partition(
                b"--BB\r\nContent-Type: message/delivery-status"
            )[0],
            "a delivery report with no status",
            "",
            "",
        ),
        (
            "a relayed (not failed) recipient",
            report(
                "Final-Recipient: rfc822; x@y.example\r\nAction: relayed\r\nStatus: 2.0.0",
                envelope=address,
            ),
            "relayed 2.0.0",
            "2.0.0",
            "x@y.example",
        ),
        (
            "a block with an empty Action and nothing else",
            report("Final-Recipient: rfc822; x@y.example\r\nAction:", envelope=address),
            "a report with no action",
            "",
            "x@y.example",
        ),
    ]


@pytest.mark.parametrize("what, data, reason, status, recipient", _unknowns(), ids=str)
def test_an_unknown_says_why_and_keeps_the_token_it_came_with(
    what, data, reason, status, recipient
):
    """What the admin reads about a message moved to unknown: why, and which message it
    was about (the VERP address it came to), so the unknown folder can be explained."""
    got = classify(data, SIGNER)
    assert (got.kind, got.reason, got.status, got.recipient) == (
        Kind.UNKNOWN,
        reason,
        status,
        recipient,
    )
    assert got.token == verp()[1]


def test_a_failure_anywhere_inside_classification_is_an_unknown_message(monkeypatch):
    def broken(_msg):
        raise RuntimeError("a parser bug")

    monkeypatch.setattr(bounces, "_status_blocks", broken)
    got = classify(raw(CASES[2]), SIGNER)
    assert (got.kind, got.reason, got.token) == (Kind.UNKNOWN, "unreadable message", None)


def test_mail_to_an_unsubscribe_address_says_so():
    address = f"{SIGNER.unsubscribe(KID)}@{DOMAIN}"
    letter = f"From: r@mailbox.example\r\nTo: {address}\r\nSubject: stop\r\n\r\nstop\r\n"
    got = classify(letter.encode(), SIGNER)
    assert (got.kind, got.reason) == (Kind.UNSUBSCRIBE, "mailto unsubscribe")
    # RFC 3834: an Auto-Submitted of "no" (any case) or empty is a person's message
    for value in ("no", "No", ""):
        marked = letter.replace("Subject:", f"Auto-Submitted: {value}\r\nSubject:")
        assert classify(marked.encode(), SIGNER).kind is Kind.UNSUBSCRIBE, value


def test_a_delay_warning_in_plain_text_is_no_bounce():
    """Gmail's plain-text delay warning (its wording, as flufl.bounce recognises it), built
    from the real Gmail failure: a temporary failure, never counted as a bounce."""
    case = CASES[0]
    address, token = verp(12)
    warning = (
        with_verp(raw(case), case.sender, address.partition("@")[0])
        .replace(
            b"Delivery to the following recipient failed permanently:",
            b"Delivery to the following recipient has been delayed:",
        )
        .replace(b"Technical details of permanent failure:", b"Message will be retried.")
        .replace(b"X-Failed-Recipients: aougoueioaldljgoiuiorghladkgke@example.fr\n", b"")
        .replace(b"(Failure)", b"(Delay)")
    )
    got = classify(warning, SIGNER)
    assert (got.kind, got.status, got.reason, got.token, got.recipient) == (
        Kind.DELAYED,
        "5.1.1",
        "a delay warning",
        token,
        case.recipient,
    )
    no_enhanced = warning.replace(b" 5.1.1", b"")
    assert classify(no_enhanced, SIGNER).status == "550"


@pytest.mark.parametrize(
    "blocks, kind, recipient",
    [
        (("delivered", "delayed"), Kind.DELAYED, "b@y.example"),
        (("delayed", "delivered"), Kind.DELAYED, "a@y.example"),
        (("delivered", "failed"), Kind.HARD, "b@y.example"),
        (("delayed", "failed", "delivered"), Kind.HARD, "b@y.example"),
    ],
)
def test_of_several_recipients_the_worst_news_is_reported(blocks, kind, recipient):
    """A failure outranks a delay, and a delay a success (a DSN may report all three)."""
    status = {"delivered": "2.0.0", "delayed": "4.4.1", "failed": "5.1.1"}
    data = report(
        *(
            f"Final-Recipient: rfc822; {'abc'[i]}@y.example\r\nAction: {a}\r\nStatus: {status[a]}"
            for i, a in enumerate(blocks)
        )
    )
    got = classify(data, SIGNER)
    assert (got.kind, got.recipient) == (kind, recipient)


@pytest.mark.parametrize(
    "fields, kind, status",
    [
        ("Status: 5.0.0", Kind.MESSAGE, "5.0.0"),  # says only "failed": shown as it is
        ("Diagnostic-Code: smtp; 550 rejected", Kind.HARD, "550"),  # no Status: the code's
        ("Diagnostic-Code: smtp; 550 5.1.1 gone", Kind.HARD, "5.1.1"),
        ("Diagnostic-Code: smtp; 550 host 192.0.2.153 refused it", Kind.HARD, "550"),
    ],
)
def test_a_failed_recipient_with_little_said(fields, kind, status):
    data = report(
        f"Final-Recipient: rfc822; x@y.example\r\nAction: failed\r\n{fields}",
        note="(in reply to RCPT TO command)",
    )
    got = classify(data, SIGNER)
    assert (got.kind, got.status) == (kind, status)


def test_an_smtputf8_dsn_is_read_like_any_other():
    """RFC 6533: for SMTPUTF8 mail, Postfix returns message/global-delivery-status and the
    original as message/global."""
    address, token = verp(3)
    data = (
        report(
            "Final-Recipient: utf-8; jörg@bücher.example\r\nAction: failed\r\n"
            "Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 unknown user",
            envelope="news@kuloo-demo.test",
        )
        .replace(b"message/delivery-status", b"message/global-delivery-status")
        .replace(
            b"\r\n--BB--",
            b"\r\n--BB\r\nContent-Type: message/global\r\n\r\n"
            + f"Return-Path: <{address}>\r\nSubject: Grüße\r\n\r\nhi\r\n".encode()
            + b"\r\n--BB--",
        )
    )
    got = classify(data, SIGNER)
    assert (got.kind, got.status, got.token) == (Kind.HARD, "5.1.1", token)
    assert got.reason == "550 5.1.1 unknown user"
    assert got.recipient == "jörg@bücher.example"  # UTF-8, as RFC 6533 writes it
    # its headers-only form: text/global-headers
    headers_only = data.replace(
        b"Content-Type: message/global", b"Content-Type: text/global-headers"
    )
    assert classify(headers_only, SIGNER).token == token


def test_the_x_envelope_to_header_carries_the_token_too():
    address, token = verp(9)
    data = report("Final-Recipient: rfc822; x@y.example\r\nAction: failed\r\nStatus: 5.1.1")
    data = data.replace(b"To: news@kuloo-demo.test", f"X-Envelope-To: <{address}>".encode())
    assert classify(data, SIGNER).token == token


FBL = CASES[8]  # Terra's feedback-loop report


def test_a_complaint_names_its_feedback_type_briefly():
    data = raw(FBL)
    for label, reason in (
        (b"fraud", "fraud"),
        (b"Virus", "virus"),
        (b"x" * 41, "x" * 39 + "…"),  # a short label, whatever a provider puts there
    ):
        got = classify(data.replace(b"Feedback-Type: abuse", b"Feedback-Type: " + label), SIGNER)
        assert (got.kind, got.reason) == (Kind.COMPLAINT, reason)
    got = classify(data.replace(b"Feedback-Type: abuse\n", b""), SIGNER)
    assert (got.kind, got.reason) == (Kind.COMPLAINT, "abuse")  # the feedback loops' default


@pytest.mark.parametrize("feedback_type", ["not-spam", "auth-failure", "Auth-Failure"])
def test_a_not_spam_or_auth_failure_report_unsubscribes_nobody(feedback_type):
    """RFC 5965's not-spam and RFC 6591's authentication-failure reports are feedback, not
    a person asking to hear no more: unknown, never a complaint."""
    address, token = verp(6)
    data = with_verp(raw(FBL), FBL.sender, address.partition("@")[0]).replace(
        b"Feedback-Type: abuse", f"Feedback-Type: {feedback_type}".encode()
    )
    got = classify(data, SIGNER)
    assert (got.kind, got.reason, got.token, got.status, got.recipient) == (
        Kind.UNKNOWN,
        f"feedback report: {feedback_type.lower()}",
        token,
        "",
        "",
    )
    with_rcpt = data.replace(b"Version: 1\n", b"Version: 1\nOriginal-Rcpt-To: <r@isp.example>\n")
    assert classify(with_rcpt, SIGNER).recipient == "r@isp.example"


def test_a_complaint_whose_parts_are_missing_is_still_a_complaint():
    """A provider that declares report-type=feedback-report but sends no (or an empty)
    feedback-report part, or an original without Return-Path, To or Original-Mail-From."""
    address, token = verp(8)
    local = address.partition("@")[0]
    data = with_verp(raw(FBL), FBL.sender, local)
    start = data.index(
        b"--_----------=_14187317381958992959\nContent-Disposition: inline\n"
        b"Content-Transfer-Encoding: 7bit\nContent-Type: message/feedback"
    )
    end = data.index(b"--_----------=_14187317381958992959", start + 10)
    no_fields = data[:start] + data[end:]
    got = classify(no_fields, SIGNER)
    assert (got.kind, got.reason, got.token, got.recipient) == (Kind.COMPLAINT, "abuse", token, "")
    empty_fields = re.sub(
        rb"(Content-Type: message/feedback-report\n\n)[^-]*", rb"\1", data, count=1
    )
    got = classify(empty_fields, SIGNER)
    assert (got.kind, got.reason, got.token) == (Kind.COMPLAINT, "abuse", token)
    # the original lost its Return-Path and To: the report's Original-Mail-From names it
    bare = re.sub(rb"\n(Return-Path|To): [^\n]*", b"", data)
    assert b"Return-Path" not in bare
    got = classify(bare, SIGNER)
    assert (got.kind, got.token, got.recipient) == (Kind.COMPLAINT, token, "")
    # a report without Original-Mail-From still attributes through the original
    no_omf = re.sub(rb"\nOriginal-Mail-From: [^\n]*", b"", data)
    assert b"Original-Mail-From" not in no_omf
    assert classify(no_omf, SIGNER).token == token
    # and with Original-Rcpt-To, that is the recipient
    with_rcpt = bare.replace(b"Version: 1\n", b"Version: 1\nOriginal-Rcpt-To: <r@isp.example>\n")
    assert classify(with_rcpt, SIGNER).recipient == "r@isp.example"


def test_a_report_of_another_type_is_no_dsn_and_no_complaint():
    """A read receipt (report-type=disposition-notification) that reaches the bounce
    address is neither a bounce nor a complaint."""
    address, token = verp(2)
    data = (
        f"From: r@mailbox.example\r\nTo: {address}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="M"'
        "\r\n\r\n--M\r\nContent-Type: text/plain\r\n\r\nYour message was displayed.\r\n--M--\r\n"
    ).encode()
    got = classify(data, SIGNER)
    assert (got.kind, got.reason, got.token) == (Kind.UNKNOWN, "not a bounce", token)
    # a delivery-status type on something that is no multipart/report is no DSN either
    odd = data.replace(
        b"multipart/report; report-type=disposition-notification",
        b"multipart/mixed; report-type=delivery-status",
    )
    assert classify(odd, SIGNER).reason == "not a bounce"


def test_a_notification_in_a_legacy_charset_is_still_read():
    case = CASES[4]  # Exim's plain-text bounce, now with Latin-1 bytes in its text
    data = raw(case).replace(b"This message was created", b"Ce message a \xe9t\xe9 cr\xe9\xe9")
    got = classify(data, SIGNER)
    assert (got.kind, got.status, got.recipient) == (case.kind, case.status, case.recipient)


def test_signing_refusals_say_what_is_wrong():
    with pytest.raises(ValueError, match="^link-signing keys must each be at least 16 bytes$"):
        VerpSigner([b"short"])
    with pytest.raises(ValueError, match="KulooId of at most 32 lower-case hex digits"):
        SIGNER.bounce("ABC", 1)
    with pytest.raises(ValueError, match="^a VERP token needs a KulooId of at most 32 lower-"):
        SIGNER.unsubscribe("xyz")
    with pytest.raises(ValueError, match="^no VERP token for that channel id$"):
        SIGNER.confirm(-1)
    with pytest.raises(ValueError, match="a negative id has no VERP token"):
        SIGNER.bounce(KID, -5)


def test_a_long_status_is_cut_to_20_characters_in_sells_field():
    from datetime import UTC, datetime

    text = bounces.bounce_text("5.1.1" + "9" * 30, "gone", datetime(2026, 1, 2, tzinfo=UTC))
    assert text == "Email bounced: 5.1.1" + "9" * 14 + "… gone (2026-01-02)"
