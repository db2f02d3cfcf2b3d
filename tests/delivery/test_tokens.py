"""Link tokens: the one format delivery signs and the links service verifies."""

from datetime import UTC, datetime

import pytest

from kuloo_daemon.secrets import Secret
from kuloo_daemon.tokens import BadToken, Claim, Purpose, Signer, keys_from_secret

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
OLD_KEY = b"old-key-0123456789abcdef"
NEW_KEY = b"new-key-0123456789abcdef"


def flip(text: str, at: int) -> str:
    c = text[at]
    return text[:at] + ("A" if c != "A" else "B") + text[at + 1 :]


UNSUB = Claim(Purpose.UNSUBSCRIBE, 1, "K-abc")
CLICK = Claim(Purpose.CLICK, 1, "K-abc", target="https://example.com/a?b=1")


@pytest.mark.parametrize(
    "claim", [UNSUB, CLICK, Claim(Purpose.CONFIRM, 7, "K-x", expires=int(NOW.timestamp()) + 60)]
)
def test_round_trip(claim):
    signer = Signer([NEW_KEY])
    token = signer.sign(claim)
    assert all(c.isalnum() or c in "-_." for c in token)  # URL-safe as is
    assert signer.verify(token, NOW) == claim


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: flip(t, 3),  # payload changed
        lambda t: flip(t, len(t) - 2),  # mac changed
        lambda t: t.replace(".", ""),
        lambda t: t + ".x",
        lambda t: "",
        lambda t: t[:-1],
        lambda t: t.split(".")[0] + ".",
        lambda t: "é" + t,
        lambda t: t + "=",
    ],
)
def test_tampered_tokens_are_refused(mangle):
    signer = Signer([NEW_KEY])
    with pytest.raises(BadToken):
        signer.verify(mangle(signer.sign(UNSUB)), NOW)


def test_a_forged_payload_with_another_user_is_refused():
    signer = Signer([NEW_KEY])
    good = signer.sign(UNSUB)
    other = Signer([b"attacker-key-0123456789"]).sign(Claim(Purpose.UNSUBSCRIBE, 1, "K-victim"))
    forged = other.split(".")[0] + "." + good.split(".")[1]
    with pytest.raises(BadToken):
        signer.verify(forged, NOW)


def test_purpose_is_signed_a_click_token_is_not_an_unsubscribe_token():
    signer = Signer([NEW_KEY])
    with pytest.raises(BadToken):
        signer.verify(signer.sign(CLICK), NOW, purpose=Purpose.UNSUBSCRIBE)
    assert signer.verify(signer.sign(UNSUB), NOW, purpose=Purpose.UNSUBSCRIBE) == UNSUB


def test_rotation_newest_signs_all_verify():
    before = Signer([OLD_KEY]).sign(UNSUB)
    rotated = Signer([NEW_KEY, OLD_KEY])
    assert rotated.verify(before, NOW) == UNSUB
    after = rotated.sign(UNSUB)
    assert Signer([NEW_KEY]).verify(after, NOW) == UNSUB
    with pytest.raises(BadToken):
        Signer([OLD_KEY]).verify(after, NOW)  # the first key signs


def test_unsubscribe_tokens_never_expire_others_may():
    signer = Signer([NEW_KEY])
    far_future = datetime(2099, 1, 1, tzinfo=UTC)
    assert signer.verify(signer.sign(UNSUB), far_future) == UNSUB
    short = Claim(Purpose.CONFIRM, 1, "K-abc", expires=int(NOW.timestamp()) + 60)
    token = signer.sign(short)
    assert signer.verify(token, NOW) == short
    with pytest.raises(BadToken):
        signer.verify(token, far_future)


def test_keys_from_the_credential_one_per_line_newest_first():
    secret = Secret("\n" + NEW_KEY.decode() + "\n  \n" + OLD_KEY.decode() + "\n")
    assert keys_from_secret(secret) == (NEW_KEY, OLD_KEY)
    with pytest.raises(ValueError):
        keys_from_secret(Secret("\n \n"))
    with pytest.raises(ValueError):
        Signer([b"short"])


def test_signer_never_shows_its_keys():
    signer = Signer.from_secret(Secret(NEW_KEY.decode()))
    assert NEW_KEY.decode() not in repr(signer) and NEW_KEY.decode() not in str(signer)


def test_the_whole_mac_is_compared_not_a_prefix():
    """Planted bug: the MAC compared on a prefix (its first bytes, or as long as the given
    one): a token whose MAC differs only at the end, or is cut short, or has bytes added,
    would pass. Every byte counts, and only the exact length."""
    import base64

    signer = Signer([NEW_KEY])
    head, tail = signer.sign(UNSUB).split(".")
    mac = base64.urlsafe_b64decode(tail + "=" * (-len(tail) % 4))
    assert len(mac) == 32

    def token(raw: bytes) -> str:
        return f"{head}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}"

    assert signer.verify(token(mac), NOW) == UNSUB
    forged = [mac[:i] + bytes([mac[i] ^ 1]) + mac[i + 1 :] for i in range(len(mac))]
    forged += [mac[:n] for n in range(1, len(mac))] + [mac + b"\0", mac + mac]
    for raw in forged:
        with pytest.raises(BadToken):
            signer.verify(token(raw), NOW)
