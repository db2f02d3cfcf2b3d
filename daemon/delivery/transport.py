"""How a message leaves: SMTP (smtplib, run in a worker thread) or a local Maildir.

A transport is opened for one batch (one SMTP connection reused for every message it carries;
a batch opens a few when a distant relay needs them, docs/delivery.md) and says, per
message, one of three outcomes — the only facts the outbox needs:

- ``SENT``: the server accepted it (250 after DATA) / the file is in ``new/``.
- ``NOT_SENT``: it certainly did not leave (refused recipient, 4xx/5xx before or at the
  end of DATA, a connection that failed before the message was handed over). ``permanent``
  marks 5xx answers: retrying will not help.
- ``MAYBE_SENT``: the connection broke after the whole message was handed over and
  before the server's answer: it may have been accepted. Never retried automatically.

A refusal of the *session* rather than of the message — at connect, EHLO, STARTTLS or AUTH
(``TransportError``), at MAIL FROM, a 421 at any step, or a relay that will not relay for
us (530, or 5.7.x "relay access denied" at RCPT) — is the relay's problem: the result says
``relay=True`` and the service keeps every message queued and backs off (docs/delivery.md).
Every detail keeps the server's own words (cleaned, one line) or the TLS reason.

Blocking code; ``service`` calls it through ``trio.to_thread.run_sync``. The SMTP password
arrives as a ``Secret`` and is revealed only in ``login``; it is never logged.
"""

from __future__ import annotations

import mailbox
import re
import smtplib
import ssl
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..secrets import Secret


class Outcome(StrEnum):
    SENT = "sent"
    NOT_SENT = "not_sent"
    MAYBE_SENT = "maybe_sent"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    detail: str = ""
    permanent: bool = False
    relay: bool = (
        False  # the relay refused the session, not this message: nothing is held against it
    )
    # A refusal of this message: the server's code, its words (cleaned, without the code) and
    # the step ("rcpt" or "data"), which ``rules.bounces.classify_reply`` reads.
    code: int = 0
    reply: str = ""
    stage: str = ""


class TransportError(Exception):
    """The transport could not be opened (connect, TLS, login): no message of the batch left."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str  # starttls | tls | none
    username: str = ""
    password: Secret | None = None
    timeout: float = 30.0
    ca_file: str = ""  # a CA bundle for the relay only (the system store otherwise)
    helo_name: str = ""  # the EHLO name (smtplib's guess of the local FQDN otherwise)


_REPLY_MAX = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")


def reply_text(reply: bytes | str) -> str:
    """A server's words as one clean line (at most 200 characters), without the code."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    text = " ".join(_CONTROL.sub(" ", text).split())
    if len(text) > _REPLY_MAX:
        text = text[: _REPLY_MAX - 1] + "…"
    return text


def server_words(code: int, reply: bytes | str) -> str:
    """A server's reply as one clean line: ``550 5.1.1 no such mailbox`` (at most 200 chars)."""
    return f"{code} {reply_text(reply)}".strip()


def _relay_refuses_rcpt(code: int, reply: bytes) -> bool:
    """A RCPT refusal that says "not for you, for anyone": authentication or relaying denied."""
    text = reply.decode("utf-8", "replace").lower()
    return code == 530 or (
        code >= 500
        and (
            "relay access denied" in text
            or "relaying denied" in text
            or "authentication required" in text
        )
    )


def _why(exc: BaseException) -> str:
    """Why a connection could not be set up, in words an operator can act on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the relay's certificate was refused: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or type(exc).__name__}"
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return "the relay does not offer STARTTLS"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"the relay answered {server_words(exc.smtp_code, exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "the relay closed the connection"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


NO_SMTPUTF8 = (
    "the address is not ASCII: mail to it needs SMTPUTF8, which the relay does not "
    "offer; correct the address or use a relay that offers SMTPUTF8"
)


class SmtpTransport:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.conn: smtplib.SMTP | None = None

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.settings.ca_file or None)

    def open(self) -> None:
        s = self.settings
        helo = s.helo_name or None
        conn: smtplib.SMTP
        try:
            if s.security == "tls":
                conn = smtplib.SMTP_SSL(
                    s.host, s.port, local_hostname=helo, timeout=s.timeout, context=self._context()
                )
            else:
                conn = smtplib.SMTP(s.host, s.port, local_hostname=helo, timeout=s.timeout)
            code, reply = conn.ehlo()
            if code != 250:
                raise smtplib.SMTPHeloError(code, reply)
            if s.security == "starttls":
                conn.starttls(context=self._context())
                conn.ehlo()
            if s.username:
                conn.login(s.username, s.password.reveal() if s.password else "")
        except smtplib.SMTPAuthenticationError as exc:
            raise TransportError(
                f"SMTP login refused: {server_words(exc.smtp_code, exc.smtp_error)}"
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TransportError(
                f"cannot reach the SMTP relay {s.host}:{s.port}: {_why(exc)}"
            ) from None
        self.conn = conn

    def utf8(self) -> bool:
        """Whether this connection's relay offers SMTPUTF8 (asked again for each connection)."""
        return self.conn is not None and bool(self.conn.has_extn("smtputf8"))

    def send(self, data: bytes, sender: str, recipient: str) -> Result:
        """Send one message (CRLF line ends, 7-bit) to one recipient over the open connection.

        A recipient with a non-ASCII local part goes with SMTPUTF8 (RFC 6531), checked on this
        connection before MAIL; a relay that does not offer it fails that message for good."""
        conn = self.conn
        if conn is None:
            return Result(Outcome.NOT_SENT, "no connection")
        utf8 = not (recipient.isascii() and sender.isascii())
        if utf8 and not self.utf8():
            return Result(Outcome.NOT_SENT, NO_SMTPUTF8, permanent=True)
        conn.command_encoding = "utf-8" if utf8 else "ascii"
        try:
            if conn.has_extn("pipelining"):
                replies = self._pipelined(conn, sender, recipient, utf8)
            else:
                replies = None
            code, reply = replies[0] if replies else conn.mail(sender, ["SMTPUTF8"] if utf8 else [])
            if code != 250:
                self._reset(conn, code)
                return Result(
                    Outcome.NOT_SENT, f"sender refused: {server_words(code, reply)}", relay=True
                )
            code, reply = replies[1] if replies else conn.rcpt(recipient)
            if code not in (250, 251):
                self._reset(conn, code)
                relay = code == 421 or _relay_refuses_rcpt(code, reply)
                return Result(
                    Outcome.NOT_SENT,
                    f"recipient refused: {server_words(code, reply)}",
                    permanent=code >= 500 and not relay,
                    relay=relay,
                    code=code,
                    reply=reply_text(reply),
                    stage="rcpt",
                )
            code, reply = replies[2] if replies else conn.docmd("data")
            if code != 354:
                self._reset(conn, code)
                return Result(
                    Outcome.NOT_SENT,
                    f"DATA refused: {server_words(code, reply)}",
                    permanent=code >= 500,
                    relay=code == 421,
                    code=code,
                    reply=reply_text(reply),
                    stage="data",
                )
        except (OSError, smtplib.SMTPException) as exc:
            self.conn = None
            return Result(
                Outcome.NOT_SENT, f"connection lost before the message was sent: {_why(exc)}"
            )
        # From here the message is handed over: a broken connection means "maybe".
        data = re.sub(rb"(?m)^\.", b"..", data)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        try:
            conn.send(data + b".\r\n")
        except (OSError, smtplib.SMTPException) as exc:
            self.conn = None
            return Result(Outcome.NOT_SENT, f"connection lost while sending: {_why(exc)}")
        try:
            code, reply = conn.getreply()
        except (OSError, smtplib.SMTPException) as exc:
            self.conn = None
            return Result(
                Outcome.MAYBE_SENT, f"connection lost awaiting the server's answer: {_why(exc)}"
            )
        if code == 250:
            return Result(Outcome.SENT)
        if code == 421:
            self.conn = None
        return Result(
            Outcome.NOT_SENT,
            f"message refused: {server_words(code, reply)}",
            permanent=code >= 500,
            relay=code == 421,
            code=code,
            reply=reply_text(reply),
            stage="data",
        )

    @staticmethod
    def _pipelined(
        conn: smtplib.SMTP, sender: str, recipient: str, utf8: bool
    ) -> list[tuple[int, bytes]]:
        """MAIL, RCPT and DATA in one round trip (RFC 2920, when the relay offers PIPELINING):
        two round trips a message instead of four. Should DATA be accepted although MAIL or
        RCPT was refused, the empty message is ended at once: it has no recipient."""
        options = " SMTPUTF8" if utf8 else ""
        conn.send(
            f"MAIL FROM:{smtplib.quoteaddr(sender)}{options}\r\n"
            f"RCPT TO:{smtplib.quoteaddr(recipient)}\r\nDATA\r\n"
        )
        replies: list[tuple[int, bytes]] = []
        try:
            while len(replies) < 3:
                replies.append(conn.getreply())
        except smtplib.SMTPServerDisconnected:
            if not replies or replies[-1][0] < 400:
                raise
            # A refusal that closed the session (421): answer the rest as that refusal.
            replies += [replies[-1]] * (3 - len(replies))
        if replies[2][0] == 354 and (replies[0][0] != 250 or replies[1][0] not in (250, 251)):
            conn.send(".\r\n")
            conn.getreply()
        return replies

    def _reset(self, conn: smtplib.SMTP, code: int) -> None:
        """Abandon this transaction; after a 421 the server is closing the session."""
        if code == 421:
            conn.close()
            self.conn = None
            return
        try:
            conn.rset()
        except (OSError, smtplib.SMTPException):
            self.conn = None

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.quit()
            except (OSError, smtplib.SMTPException):
                self.conn.close()
            self.conn = None


class MaildirTransport:
    """Writes each message into a Maildir (``new/``), as a local MDA would: with a
    ``Return-Path:`` header first, the envelope sender (the VERP address when ``[bounces]
    domain`` is set), as an MTA adds at final delivery (RFC 5321, 4.4)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.box: mailbox.Maildir | None = None

    def open(self) -> None:
        try:
            self.box = mailbox.Maildir(self.path, create=True)
        except OSError as exc:
            raise TransportError(f"cannot open the Maildir {self.path}: {exc.strerror}") from None

    def utf8(self) -> bool:
        return True  # a Maildir takes UTF-8 headers as they are

    def send(self, data: bytes, sender: str, recipient: str) -> Result:
        assert self.box is not None
        # The address as it stood in MAIL FROM (checked there: no CR/LF can reach it here).
        return_path = f"Return-Path: <{sender}>\r\n".encode()
        try:
            self.box.add((return_path + data).replace(b"\r\n", b"\n"))
        except OSError as exc:
            return Result(Outcome.NOT_SENT, f"cannot write to the Maildir: {exc.strerror}")
        return Result(Outcome.SENT)

    def close(self) -> None:
        self.box = None
