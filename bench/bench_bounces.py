"""The bounce mailbox: bounces processed per second from a Maildir of 10,000 messages.

A real Maildir on disk and a SQLite store with 500 users; the messages are the test samples
(tests/samples/dsn/, real Postfix DSNs and the synthetic ARF report) given distinct VERP
tokens, so every one is a new message: hard DSNs to VERP addresses (40 %), delay warnings
(20 %), complaints (15 %), mailto unsubscribes (10 %), policy refusals (10 %, to a VERP
address) and garbage (5 %, to ``.unknown``). One poll reads them all
(``BounceMailbox.poll``: read, classify, commit with the digest, remove); the figure is
messages per second (reported; the goal is that a day's bounces of a large sender, a few
thousand, take seconds, not minutes).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "samples" / "dsn"
KEY = "bench-signing-key-0123456789abcdef"
MESSAGES = int(os.environ.get("KULOO_BENCH_BOUNCES", "10000"))
USERS = 500


def _sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def _messages(signer, kuloo_ids: list[str], n: int) -> list[bytes]:
    verp = _sample("verp-failed-5.1.1-to-b-c1d2e3f4.tok_bounces.example.eml")
    delayed = _sample("delayed-4.2.1-busy.user_remote450.example.eml")
    refused = _sample("failed-5.7.1-third_refuses.example.eml")
    arf = _sample("arf-abuse.synthetic.eml")
    out: list[bytes] = []
    for i in range(n):
        kid = kuloo_ids[i % len(kuloo_ids)]
        slot = i % 20
        if slot < 8:
            text = verp.replace("b-c1d2e3f4.tok", signer.bounce(kid, i + 1))
        elif slot < 12:
            text = f"X-Bench: {i}\n" + delayed
        elif slot < 15:
            text = arf.replace("@@B@@", signer.bounce(kid, i + 1)).replace(
                "@@U@@", signer.unsubscribe(kid)
            )
        elif slot < 17:
            text = (
                f"From: reader{i}@mailbox.example\nTo: {signer.unsubscribe(kid)}@bounces.example"
                f"\nSubject: unsubscribe\nMessage-ID: <{i}@mailbox.example>\n\nplease\n"
            )
        elif slot < 19:
            # as Postfix delivers it: the VERP address it came to, first
            to = signer.bounce(kid, i + 1)
            text = f"Delivered-To: {to}@bounces.example\nX-Bench: {i}\n" + refused
        else:
            text = f"garbage {i}\n\x00\x01 not mail"
        out.append(text.encode())
    return out


def _fill_maildir(md: Path, messages: list[bytes]) -> None:
    for sub in ("tmp", "new", "cur"):
        (md / sub).mkdir(parents=True, exist_ok=True)
    for i, raw in enumerate(messages):
        name = f"{1_800_000_000 + i}.M{i}P1.bench"
        (md / "tmp" / name).write_bytes(raw)
        os.rename(md / "tmp" / name, md / "new" / name)


async def _run(root: Path) -> tuple[int, float, dict[str, int]]:
    from kuloo_daemon import config as config_mod
    from kuloo_daemon.delivery.bounces import BounceMailbox
    from kuloo_daemon.rules.bounces import VerpSigner
    from kuloo_daemon.services import open_services
    from kuloo_daemon.store import channels as channel_store
    from kuloo_daemon.store import users as user_store
    from kuloo_daemon.vocabulary import Actor

    (root / "creds").mkdir()
    (root / "creds" / "link-signing-key").write_text(KEY + "\n")
    md = root / "bounces"
    config = config_mod.from_mapping(
        {
            "daemon": {"state_dir": str(root / "state")},
            "control": {"socket": str(root / "c.sock")},
            "clock": {"mode": "manual", "start": "2026-01-05T09:00:00Z"},
            "credentials": {"directory": str(root / "creds")},
            "bounces": {"domain": "bounces.example", "maildir": str(md)},
        }
    )
    async with open_services(config) as services:
        now = services.clock.now()
        channel = (
            await services.store.run(
                channel_store.create, {"name": "Bench", "sequential_tags": []}, None, now
            )
        ).channel.id
        kuloo_ids = []
        for i in range(USERS):
            doc = await services.store.run(
                user_store.add, channel, {"email": f"u{i}@example.com"}, Actor.ADMIN, now
            )
            kuloo_ids.append(doc.kuloo_id)
        messages = _messages(VerpSigner([KEY.encode()]), kuloo_ids, MESSAGES)
        _fill_maildir(md, messages)
        started = time.perf_counter()
        poll = await BounceMailbox(services).poll()
        seconds = time.perf_counter() - started
        if not poll.ok:
            raise RuntimeError(poll.error)
        left = sum(1 for sub in ("new", "cur") for _ in (md / sub).iterdir())
        if left:
            raise RuntimeError(f"{left} messages left in the Maildir")
        return sum(poll.counts.values()), seconds, dict(poll.counts)


def main() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="kb", dir="/tmp") as tmp:
        processed, seconds, counts = trio.run(_run, Path(tmp))
    rate = processed / seconds
    shown = ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items()))
    print(f"   {processed:,} bounce mailbox messages in {seconds:.1f} s: {rate:,.0f}/s ({shown})")
    return {"bounces processed per second": rate}


if __name__ == "__main__":
    main()
