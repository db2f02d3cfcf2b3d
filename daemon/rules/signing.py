"""DKIM signing of every email Kuloo sends, with dkimpy (docs/delivery.md, "DKIM").

``[dkim] domain`` and ``[dkim] selector`` name the key; the RSA private key (PEM, at least
2048 bits) is the ``dkim-private-key`` credential file. Big providers do not verify
Ed25519 alone, so RSA is the signature; ``[dkim] ed25519_selector`` adds an Ed25519 one
beside it (RFC 8463; key: the ``dkim-ed25519-key`` credential, the base64 32-byte seed).
The signature covers ``SIGNED`` (relaxed/relaxed); ``OVERSIGNED`` are listed once more, so
that a header of that name added on the way breaks the signature (RFC 6376 §8.15; RFC 8058
wants List-Unsubscribe and List-Unsubscribe-Post covered). ``dkim_record`` is the TXT record
to publish at ``<selector>._domainkey.<domain>``, ``p=`` split into 255-character strings.
Pure apart from dkimpy (CPU: about 135 RSA signatures a second per core).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import dkim
import dkim.crypto

SIGNED = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
    "Feedback-ID",
)
OVERSIGNED = ("From", "Subject", "List-Unsubscribe", "List-Unsubscribe-Post")
MIN_BITS = 2048
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_RSA_OID = b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"  # 1.2.840.113549.1.1.1 rsaEncryption


class DkimKeyError(ValueError):
    """The DKIM key cannot be used (never carries the key's content)."""


def is_domain(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return len(labels) >= 2 and all(_LABEL.match(label) for label in labels)


def aligned(sender_domain: str, domain: str) -> bool:
    """DMARC relaxed alignment: the sender's domain is ``domain`` or under it."""
    s, d = sender_domain.lower().rstrip("."), domain.lower().rstrip(".")
    return s == d or s.endswith("." + d)


def misaligned(sender: str, domain: str) -> str:
    """Why a channel's mail is not sent while its sender is outside ``[dkim] domain``."""
    return (
        f"the sender {sender!r} is not at the DKIM domain {domain} or under it: DMARC "
        "would fail; change the channel's sender or [dkim] domain"
    )


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        head = bytes([n])
    else:
        size = n.to_bytes((n.bit_length() + 7) // 8, "big")
        head = bytes([0x80 | len(size)]) + size
    return bytes([tag]) + head + body


def _der_int(value: int) -> bytes:
    data = value.to_bytes(value.bit_length() // 8 + 1, "big")  # a leading 0: never negative
    return _der(0x02, data)


@dataclass(frozen=True)
class Ed25519Key:
    selector: str
    seed: bytes  # base64, as dkimpy takes it
    public: bytes  # the raw 32-byte public key


def load_ed25519(seed: str, selector: str) -> Ed25519Key:
    """An Ed25519 key from its base64 32-byte seed; ``DkimKeyError`` when it is not one."""
    import binascii

    import nacl.signing

    try:
        raw = base64.b64decode(seed.strip(), validate=True)
        if len(raw) != 32:
            raise ValueError
        key = nacl.signing.SigningKey(raw)
    except (binascii.Error, ValueError):
        raise DkimKeyError(
            "not an Ed25519 key: the base64 of 32 random bytes (head -c 32 /dev/urandom | base64)"
        ) from None
    return Ed25519Key(selector, base64.b64encode(raw), bytes(key.verify_key))


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    pem: bytes
    bits: int
    public_der: bytes  # SubjectPublicKeyInfo
    ed25519: Ed25519Key | None = None  # a second signature, never the only one

    def sign(self, message: bytes) -> bytes:
        """``message`` with its ``DKIM-Signature`` header in front (CRLF).

        The signature's ``t=`` is the wall clock's time (dkimpy's), never the business
        clock's: receivers compare it with their own clock, and a manual clock set ahead
        (the demo, tests) would otherwise stamp a signature from the future."""
        present = {
            line.split(b":", 1)[0].strip().lower()
            for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
            if line and line[:1] not in (b" ", b"\t")
        }
        headers = [h for h in SIGNED if h.lower().encode() in present] + list(OVERSIGNED)
        include = [h.encode() for h in headers]
        signature: bytes = dkim.sign(
            message,
            self.selector.encode(),
            self.domain.encode(),
            self.pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
        )
        if self.ed25519 is not None:
            second: bytes = dkim.sign(
                message,
                self.ed25519.selector.encode(),
                self.domain.encode(),
                self.ed25519.seed,
                signature_algorithm=b"ed25519-sha256",
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=include,
            )
            signature = second + signature
        return signature + message

    def record(self) -> str:
        return dkim_record(self)


def load_key(pem: str, domain: str, selector: str) -> DkimKey:
    """The key in ``pem`` for ``selector._domainkey.domain``; ``DkimKeyError`` when it does
    not load or is shorter than 2048 bits."""
    try:
        key = dkim.crypto.parse_pem_private_key(pem.encode("ascii"))
    except (dkim.crypto.UnparsableKeyError, UnicodeEncodeError, ValueError, IndexError):
        raise DkimKeyError(
            "not an RSA private key in PEM form (make one with: openssl genrsa 2048)"
        ) from None
    bits = key["modulus"].bit_length()
    if bits < MIN_BITS:
        raise DkimKeyError(f"the RSA key has {bits} bits; at least {MIN_BITS} are needed")
    rsa_public = _der(0x30, _der_int(key["modulus"]) + _der_int(key["publicExponent"]))
    spki = _der(
        0x30, _der(0x30, _der(0x06, _RSA_OID) + _der(0x05, b"")) + _der(0x03, b"\x00" + rsa_public)
    )
    return DkimKey(domain.rstrip(".").lower(), selector, pem.encode("ascii"), bits, spki)


def dkim_record(key: DkimKey) -> str:
    """The DNS TXT record(s), in zone-file form: ``p=`` split into 255-character strings."""
    records = [(key.selector, txt_value(key).decode())]
    if key.ed25519 is not None:
        records.append(
            (
                key.ed25519.selector,
                f"v=DKIM1; k=ed25519; p={base64.b64encode(key.ed25519.public).decode()}",
            )
        )
    lines = []
    for selector, value in records:
        strings = [value[i : i + 255] for i in range(0, len(value), 255)]
        joined = " ".join(f'"{s}"' for s in strings)
        lines.append(f"{selector}._domainkey.{key.domain}. IN TXT ( {joined} )")
    return "\n".join(lines)


def txt_value(key: DkimKey) -> bytes:
    """The record's text as a resolver hands it over (the strings joined)."""
    return f"v=DKIM1; k=rsa; p={base64.b64encode(key.public_der).decode('ascii')}".encode()
