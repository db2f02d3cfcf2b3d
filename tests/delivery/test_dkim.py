"""DKIM (docs/delivery.md, "DKIM"): every kind of email verifies with dkimpy against the
published key, through a DNS stub (no network); a message altered after signing fails."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from kuloo_daemon import config as config_mod
from kuloo_daemon.control import methods
from kuloo_daemon.control.protocol import ProtocolError
from kuloo_daemon.delivery.message import Envelope, Recipient, build_bytes
from kuloo_daemon.delivery.render import Piece, render_email
from kuloo_daemon.links.server import confirmation_bytes
from kuloo_daemon.rules.signing import DkimKeyError, dkim_record, load_key, txt_value
from kuloo_daemon.tokens import Signer
from kuloo_daemon.vocabulary import OutboxState

NOW = datetime(2026, 1, 5, 9, tzinfo=UTC)
SIGNER = Signer([b"dkim-test-key-0123456789"])
ENVELOPE = Envelope(
    3, "Jardins de l’Été", "Jardins <news@gardens.test>", "https://links.kuloo.test"
)
PIECES = [
    Piece(1, 1, "Plan your beds", "markdown", "Hello **there**."),
    Piece(2, 1, "Frost is coming", "markdown", "Cover the beds."),
]


def rsa_pem(bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def pem() -> str:
    return rsa_pem()


def dns_for(key):
    """dkimpy's ``dnsfunc``: only the key's own name answers."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return (
            txt_value(key) if name == f"{key.selector}._domainkey.{key.domain}.".encode() else None
        )

    return lookup


def each_kind() -> dict[str, bytes]:
    channel = SimpleNamespace(id=3, name=ENVELOPE.channel_name, sender=ENVELOPE.sender)
    recipient = Recipient("K-1", "eve@example.com", "Évé", "Lee")
    one = render_email(PIECES[:1], channel=ENVELOPE.channel_name, postal_address="1 Road")
    two = render_email(PIECES, channel=ENVELOPE.channel_name, postal_address="1 Road")
    return {
        "sequence": build_bytes(
            one, ENVELOPE, recipient, SIGNER, msg_id="<k.1@gardens.test>", date=NOW, kind="sequence"
        ),
        "digest": build_bytes(
            two, ENVELOPE, recipient, SIGNER, msg_id="<k.2@gardens.test>", date=NOW, kind="digest"
        ),
        "confirmation": confirmation_bytes(channel, "eve@example.com", "https://l.test/c/x", NOW),
    }


def signed_headers(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    sig = re.search(r"^DKIM-Signature:(.*?)(?=^\S)", head + "\r\nX", re.M | re.S).group(1)
    h = re.search(r"\bh=([^;]*);", re.sub(r"\s+", "", sig)).group(1)
    return h.split(":")


def test_the_signature_time_is_the_wall_clocks_whatever_the_message_date(pem):
    """The messages of ``each_kind`` are dated January 2026 (a business clock); ``t=`` is
    now, as receivers read it."""
    key = load_key(pem, "gardens.test", "k2026")
    before = int(time.time())
    signed = key.sign(each_kind()["digest"])
    after = int(time.time())
    head = re.sub(rb"\s+", b"", signed.split(b"\r\n\r\n", 1)[0])
    stamp = int(re.search(rb";t=(\d+);", head).group(1))
    assert before <= stamp <= after


@pytest.mark.parametrize("kind", ["sequence", "digest", "confirmation"])
def test_every_kind_verifies_and_an_altered_message_fails(pem, kind):
    key = load_key(pem, "gardens.test", "k2026")
    signed = key.sign(each_kind()[kind])
    assert dkim.verify(signed, dnsfunc=dns_for(key))
    h = signed_headers(signed)
    for name in (
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "feedback-id",
    ):
        assert name in h, (name, h)
    for name in ("from", "subject", "list-unsubscribe", "list-unsubscribe-post"):  # oversigned
        assert h.count(name) == (2 if name in ("from", "subject") or kind != "confirmation" else 1)
    if kind != "confirmation":
        assert "list-id" in h
    head, body = signed.split(b"\r\n\r\n", 1)
    altered = [
        head + b"\r\n\r\n" + body.replace(b"--=_kuloo", b"--=_kuloX", 1),  # the body
        head.replace(b"Date: Mon", b"Date: Tue") + b"\r\n\r\n" + body,  # a signed header
        head + b"\r\nSubject: Your account is locked\r\n\r\n" + body,  # a second Subject
        head + b"\r\nList-Unsubscribe: <https://evil.example/u>\r\n\r\n" + body,
    ]
    for bad in altered:
        assert not dkim.verify(bad, dnsfunc=dns_for(key))


def test_keys_that_do_not_load_are_refused_without_showing_them(pem):
    with pytest.raises(DkimKeyError, match="1024 bits; at least 2048"):
        load_key(rsa_pem(1024), "gardens.test", "k")
    with pytest.raises(DkimKeyError, match="not an RSA private key") as err:
        load_key(
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----",
            "gardens.test",
            "k",
        )
    assert "c2VjcmV0" not in str(err.value)
    assert load_key(pem, "Gardens.Test.", "k").domain == "gardens.test"


def test_the_record_is_the_public_key_in_strings_of_at_most_255(pem):
    key = load_key(pem, "gardens.test", "k2026")
    record = dkim_record(key)
    assert record.startswith('k2026._domainkey.gardens.test. IN TXT ( "v=DKIM1; k=rsa; p=')
    strings = re.findall(r'"([^"]*)"', record)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings) and len(strings[0]) == 255
    public = (
        serialization.load_pem_private_key(pem.encode(), None)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    import base64

    assert "".join(strings).split("p=")[1] == base64.b64encode(public).decode()


def _write(tmp: Path, body: str, key: str | None) -> Path:
    creds = tmp / "creds"
    creds.mkdir(exist_ok=True)
    if key is not None:
        (creds / "dkim-private-key").write_text(key)
    path = tmp / "k.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{tmp}/state"\n[control]\nsocket = "{tmp}/c.sock"\n'
        f'[credentials]\ndirectory = "{creds}"\n'
        '[links]\npublic_url = "https://links.example.com"\n' + body
    )
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kuloo_daemon.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_refuses_a_key_that_does_not_load_and_dkim_record_prints_it(tmp_path, pem):
    dkim_section = '[dkim]\ndomain = "gardens.test"\nselector = "k2026"\n'
    for bad, why in (
        (None, "does not exist"),
        ("not a key", "not an RSA private key"),
        (rsa_pem(1024), "1024 bits"),
    ):
        path = _write(tmp_path, dkim_section, bad)
        if bad is None and (tmp_path / "creds" / "dkim-private-key").exists():
            os.unlink(tmp_path / "creds" / "dkim-private-key")
        for command in ("check-config", "run"):
            r = _cli(command, "--config", str(path))
            assert r.returncode == 2, (command, r.stderr)
            assert "credentials.dkim_private_key: the DKIM key does not load" in r.stderr
            assert why in r.stderr, r.stderr
        assert not (tmp_path / "state").exists()
    path = _write(tmp_path, dkim_section, pem)
    assert _cli("check-config", "--config", str(path)).returncode == 0
    r = _cli("dkim-record", "--config", str(path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == dkim_record(load_key(pem, "gardens.test", "k2026"))
    half = _write(tmp_path, '[dkim]\ndomain = "gardens.test"\n', pem)
    r = _cli("check-config", "--config", str(half))
    assert r.returncode == 2 and "dkim.selector: required" in r.stderr


async def test_delivery_signs_every_email_and_fails_a_misaligned_channels_mail(
    env_factory, smtp_sink, pem
):
    async with env_factory(dkim={"domain": "gardens.test", "selector": "k2026"}) as env:
        (Path(env.services.config.credentials_dir()) / "dkim-private-key").write_text(pem)
        key = config_mod.dkim_key(env.services.config)
        ch = await env.channel()  # news@gardens.test: aligned
        sub = await env.channel(name="Sub", sender="Sub <news@mail.gardens.test>")  # under it
        other = await env.channel(name="Other", sender="Other <news@elsewhere.test>")
        for channel in (ch, sub, other):
            await env.delivery.import_articles(channel, "sample")
            await env.user(channel, f"ann{channel}@example.com", tags=["welcome"], first_name="Ann")
        await env.delivery.run(None)
        assert sorted(r for _f, (r,) in smtp_sink.envelopes) == [
            f"ann{ch}@example.com",
            f"ann{sub}@example.com",
        ]
        for raw in smtp_sink.raw:
            assert raw.startswith(
                b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=gardens.test;"
            )
            assert dkim.verify(raw, dnsfunc=dns_for(key))
        (failed,) = await env.outbox(other, OutboxState.FAILED.value)
        assert "not at the DKIM domain gardens.test" in failed.last_error
        assert not await env.outbox(other, OutboxState.QUEUED.value)
        # The control methods: status lists the misaligned channel; a new sender outside is refused.
        status = await methods._dkim_status(env.services)
        assert status == {
            "domain": "gardens.test",
            "selector": "k2026",
            "misaligned": [{"id": other, "name": "Other", "sender": "Other <news@elsewhere.test>"}],
        }
        with pytest.raises(ProtocolError, match="'sender' must be at gardens.test or under it"):
            await methods.channels_update(
                env.services, {"id": ch, "sender": "N <n@gardens.test.evil>"}
            )
        with pytest.raises(ProtocolError, match="must be at gardens.test"):
            await methods.channels_create(env.services, {"name": "X", "sender": "x@elsewhere.test"})
        await methods.channels_update(env.services, {"id": other, "sender": "O <o@gardens.test>"})
        assert (await methods._dkim_status(env.services))["misaligned"] == []


def test_an_ed25519_signature_only_ever_beside_the_rsa_one(pem):
    import base64
    from dataclasses import replace as with_

    from kuloo_daemon.rules.signing import load_ed25519

    seed = base64.b64encode(bytes(range(32))).decode()
    key = with_(load_key(pem, "gardens.test", "rsa1"), ed25519=load_ed25519(seed, "ed1"))
    records = dict(line.split("._domainkey.", 1) for line in dkim_record(key).splitlines())
    assert set(records) == {"rsa1", "ed1"} and "k=ed25519; p=" in records["ed1"]

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        selector = name.split(b".", 1)[0].decode()
        if selector not in records:
            return None
        return "".join(re.findall(r'"([^"]*)"', records[selector])).encode()  # strings joined

    signed = key.sign(each_kind()["sequence"])
    assert signed.count(b"DKIM-Signature:") == 2
    checker = dkim.DKIM(signed)
    assert checker.verify(idx=0, dnsfunc=lookup) and checker.verify(idx=1, dnsfunc=lookup)
    algorithms = re.findall(rb"a=([a-z0-9-]+);", signed.split(b"\r\n\r\n")[0])
    assert sorted(algorithms) == [b"ed25519-sha256", b"rsa-sha256"]
    with pytest.raises(DkimKeyError, match="not an Ed25519 key"):
        load_ed25519("c2hvcnQ=", "ed1")
    with pytest.raises(DkimKeyError, match="not an RSA private key"):  # never alone
        load_key(seed, "gardens.test", "ed1")


def test_check_config_names_the_ed25519_key_that_does_not_load(tmp_path, pem):
    body = '[dkim]\ndomain = "gardens.test"\nselector = "k2026"\ned25519_selector = "ed2026"\n'
    path = _write(tmp_path, body, pem)
    r = _cli("check-config", "--config", str(path))
    assert (
        r.returncode == 2 and "credentials.dkim_ed25519_key: the DKIM key does not load" in r.stderr
    )
    (tmp_path / "creds" / "dkim-ed25519-key").write_text("bm90IGEga2V5\n")
    r = _cli("check-config", "--config", str(path))
    assert r.returncode == 2 and "not an Ed25519 key" in r.stderr, r.stderr
    (tmp_path / "creds" / "dkim-ed25519-key").write_text(
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    )
    assert _cli("check-config", "--config", str(path)).returncode == 0
    r = _cli("dkim-record", "--config", str(path))
    assert r.stdout.count("IN TXT") == 2 and "ed2026._domainkey.gardens.test." in r.stdout
