"""How a message leaves: SMTP (smtplib, run in a worker thread) or a local Maildir.

A transport is opened for one batch (one SMTP connection reused for every message of the
batch) and says, per message, one of three outcomes — the only facts the outbox needs:

- ``SENT``: the server accepted it (250 after DATA) / the file is in ``new/``.
- ``NOT_SENT``: it certainly did not leave (refused recipient, 4xx/5xx before or at the
  end of DATA, a connection that failed before the message was handed over). ``permanent``
  marks 5xx answers: retrying will not help.
- ``MAYBE_SENT``: the connection broke after the whole message was handed over and
  before the server's answer: it may have been accepted. Never retried automatically.

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


class SmtpTransport:
    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self.conn: smtplib.SMTP | None = None

    def open(self) -> None:
        s = self.settings
        conn: smtplib.SMTP
        try:
            if s.security == "tls":
                conn = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=ssl.create_default_context())
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            conn.ehlo()
            if s.security == "starttls":
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
            if s.username:
                conn.login(s.username, s.password.reveal() if s.password else "")
        except smtplib.SMTPAuthenticationError as exc:
            raise TransportError(f"SMTP login refused ({exc.smtp_code})") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise TransportError(f"cannot reach the SMTP relay {s.host}:{s.port}: {type(exc).__name__}") from None
        self.conn = conn

    def send(self, data: bytes, sender: str, recipient: str) -> Result:
        """Send one message (CRLF line ends, 7-bit) to one recipient over the open connection."""
        conn = self.conn
        if conn is None:
            return Result(Outcome.NOT_SENT, "no connection")
        try:
            code, reply = conn.mail(sender)
            if code != 250:
                conn.rset()
                return Result(Outcome.NOT_SENT, f"sender refused: {code}", permanent=code >= 500)
            code, reply = conn.rcpt(recipient)
            if code not in (250, 251):
                conn.rset()
                return Result(Outcome.NOT_SENT, f"recipient refused: {code}", permanent=code >= 500)
            code, reply = conn.docmd("data")
            if code != 354:
                conn.rset()
                return Result(Outcome.NOT_SENT, f"DATA refused: {code}", permanent=code >= 500)
        except (OSError, smtplib.SMTPException) as exc:
            self.conn = None
            return Result(Outcome.NOT_SENT, f"connection lost before the message was sent: {type(exc).__name__}")
        # From here the message is handed over: a broken connection means "maybe".
        data = re.sub(rb"(?m)^\.", b"..", data)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        try:
            conn.send(data + b".\r\n")
        except (OSError, smtplib.SMTPException) as exc:
            self.conn = None
            return Result(Outcome.NOT_SENT, f"connection lost while sending: {type(exc).__name__}")
        try:
            code, reply = conn.getreply()
        except (OSError, smtplib.SMTPException) as exc:
            self.conn = None
            return Result(Outcome.MAYBE_SENT, f"connection lost awaiting the server's answer: {type(exc).__name__}")
        if code == 250:
            return Result(Outcome.SENT)
        return Result(Outcome.NOT_SENT, f"message refused: {code}", permanent=code >= 500)

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.quit()
            except (OSError, smtplib.SMTPException):
                self.conn.close()
            self.conn = None


class MaildirTransport:
    """Writes each message into a Maildir (``new/``), as a local MDA would."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.box: mailbox.Maildir | None = None

    def open(self) -> None:
        try:
            self.box = mailbox.Maildir(self.path, create=True)
        except OSError as exc:
            raise TransportError(f"cannot open the Maildir {self.path}: {exc.strerror}") from None

    def send(self, data: bytes, sender: str, recipient: str) -> Result:
        assert self.box is not None
        try:
            self.box.add(data.replace(b"\r\n", b"\n"))
        except OSError as exc:
            return Result(Outcome.NOT_SENT, f"cannot write to the Maildir: {exc.strerror}")
        return Result(Outcome.SENT)

    def close(self) -> None:
        self.box = None
