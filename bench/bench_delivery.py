"""Email delivery: render rate for one article, per-recipient cost against a naive pipeline,
and the send rate to a local SMTP sink.

- Render rate (goal >= 1,000/s on one core): personalised messages for one article —
  the article rendered once (Markdown, template, premailer, text part), then per recipient
  the greeting, the signed links and the MIME message, serialised to bytes.
- Signed render rate (goal >= 100/s on one core): the same, each message DKIM-signed
  (dkimpy, RSA 2048, relaxed/relaxed).
- Round trips (goal: the channel's 10 messages/s): one channel at its default rate through a
  proxy that delays every chunk 25 ms each way (a relay 50 ms away), with and without
  PIPELINING. ``KULOO_BENCH_DELIVERY_ONLY=rtt`` runs only this part,
  ``KULOO_BENCH_RTT_EMAILS`` sets how many emails (40).
- Per-recipient cost (goal >= 50x cheaper) against a naive pipeline that runs Markdown +
  template + premailer + text part for every recipient.
- Send rate (reported): a whole delivery pass (plan, claim, render, SMTP, record) for N
  users to an aiosmtpd sink in its own process, batches claimed and committed together.
- Due users (reported): with 100,000 users in a channel (bench_users' fill) a planning
  pass reads only the users due. Printed: the pass that reads every user (each pass did,
  before ``User.next_due_at``; now once, after the upgrade), then a pass when 100 users
  are due (changed), with the users read by each.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio

from kuloo_daemon.delivery.message import Envelope, Recipient, build_bytes, frame
from kuloo_daemon.delivery.render import Piece, render_email
from kuloo_daemon.tokens import Signer

ROOT = Path(__file__).resolve().parents[1]
ARTICLE = (
    (ROOT / "config" / "articles" / "sequence" / "02-planning.md").read_text().split("---", 2)[2]
)
PIECE = Piece(1, 1, "Plan your beds in one afternoon", "markdown", ARTICLE * 4)
ENVELOPE = Envelope(
    1,
    "Kuloo Gardens",
    "Kuloo Gardens <news@gardens.test>",
    "https://links.kuloo.test",
    "unsubscribe@gardens.test",
)
SIGNER = Signer([b"bench-signing-key-0123456789abcdef"])
NOW = datetime(2026, 1, 5, 9, tzinfo=UTC)
RENDER_GOAL, RATIO_GOAL, SIGNED_GOAL = 1000.0, 50.0, 100.0
SEND_USERS = int(os.environ.get("KULOO_BENCH_SEND_USERS", "500"))


def recipients(n: int):
    return [Recipient(f"K{i:08d}", f"user{i}@example.com", f"User{i}") for i in range(n)]


def dkim_key():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from kuloo_daemon.rules.signing import load_key

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return load_key(pem.decode(), "gardens.test", "bench")


def personalised_rate(seconds: float = 2.0, key=None) -> float:
    rendered = render_email(
        [PIECE], channel="Kuloo Gardens", postal_address="1 Allotment Road\nLeeds"
    )
    people = recipients(1000)
    shared = frame(rendered, ENVELOPE)
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        r = people[n % len(people)]
        data = build_bytes(
            rendered,
            ENVELOPE,
            r,
            SIGNER,
            msg_id=f"<kuloo.1.{n}@gardens.test>",
            date=NOW,
            frame_=shared,
        )
        if key is not None:
            key.sign(data)
        n += 1
    return n / (time.perf_counter() - started)


def naive_rate(count: int = 15) -> float:
    people = recipients(count)
    started = time.perf_counter()
    for n, r in enumerate(people):
        # What a pipeline without the shared render does: everything, per recipient.
        rendered = render_email(
            [PIECE], channel="Kuloo Gardens", postal_address="1 Allotment Road\nLeeds"
        )
        build_bytes(rendered, ENVELOPE, r, SIGNER, msg_id=f"<kuloo.1.{n}@gardens.test>", date=NOW)
    return count / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def send_pass(
    root: Path, port: int, signed: bool = False, users: int = SEND_USERS, per_second: float = 10_000
) -> tuple[int, float]:
    from kuloo_daemon import config as config_mod
    from kuloo_daemon.delivery.service import Delivery
    from kuloo_daemon.services import open_services
    from kuloo_daemon.store import channels as channel_store
    from kuloo_daemon.store import users as user_store
    from kuloo_daemon.vocabulary import Actor

    (root / "creds").mkdir()
    (root / "creds" / "link-signing-key").write_text("bench-signing-key-0123456789abcdef\n")
    dkim = {}
    if signed:
        (root / "creds" / "dkim-private-key").write_text(dkim_key().pem.decode())
        dkim = {"dkim": {"domain": "bench.test", "selector": "bench"}}
    (root / "articles" / "one").mkdir(parents=True)
    (root / "articles" / "one" / "a.md").write_text(
        "---\ntitle: Hello\ntags: [welcome]\npublished_at: 2026-01-01\n---\n" + ARTICLE
    )
    config = config_mod.from_mapping(
        {
            "daemon": {"state_dir": str(root / "state")},
            "control": {"socket": str(root / "c.sock")},
            "clock": {"mode": "manual", "start": "2026-01-05T09:00:00Z"},
            "credentials": {"directory": str(root / "creds")},
            "articles": {"root": str(root / "articles")},
            "smtp": {"host": "127.0.0.1", "port": port, "security": "none"},
            "delivery": {"messages_per_second": per_second, "batch_size": 100},
            "links": {"public_url": "https://links.kuloo.test"},
            **dkim,
        }
    )
    async with open_services(config) as services:
        delivery = Delivery(services)
        now = services.clock.now()
        channel = (
            await services.store.run(
                channel_store.create,
                {"name": "Bench", "sender": "Bench <b@bench.test>", "sequential_tags": ["welcome"]},
                None,
                now,
            )
        ).channel.id
        await delivery.import_articles(channel, "one")
        for i in range(users):
            await services.store.run(
                user_store.add,
                channel,
                {"email": f"u{i}@example.com", "promo_tags": ["welcome"], "frequency": "disabled"},
                Actor.ADMIN,
                now,
            )
        started = time.perf_counter()
        counts = await delivery.run(channel)
        return counts.sent, time.perf_counter() - started


def send_rate(signed: bool = False) -> float:
    port = free_port()
    sink = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-c",
            "aiosmtpd.handlers.Sink",
            "-l",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
            sent, seconds = trio.run(send_pass, Path(tmp), port, signed)
        if sent != SEND_USERS:
            raise RuntimeError(f"sent {sent} of {SEND_USERS}")
        return sent / seconds
    finally:
        sink.terminate()
        sink.wait(5)


RTT_SECONDS, RTT_RATE = 0.050, 10.0
RTT_USERS = int(os.environ.get("KULOO_BENCH_RTT_EMAILS", "40"))


class DelayingProxy:
    """A TCP proxy that holds every chunk RTT/2 in each direction (order kept): a relay
    50 ms away, on loopback."""

    def __init__(self, target: int, delay: float) -> None:
        import threading

        self.target, self.delay = target, delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            for sock in (client, server):  # the proxy adds its delay, never Nagle's
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        import queue
        import threading

        held: queue.Queue = queue.Queue()

        def deliver() -> None:
            while True:
                due, data = held.get()
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    if not data:
                        dst.shutdown(socket.SHUT_WR)
                        return
                    dst.sendall(data)
                except OSError:
                    return

        threading.Thread(target=deliver, daemon=True).start()
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            held.put((time.monotonic() + self.delay, data))
            if not data:
                return

    def close(self) -> None:
        self.listener.close()


def rtt_rate(pipelining: bool) -> dict[str, float]:
    """One channel at its default 10 messages/s through a relay 50 ms away: the rate the relay
    sees (messages between its first and last 250, per second: what the pacing allows, the
    limit at best), the whole pass's rate (plan, connect, record included), the fastest ten
    messages in a row as the relay saw them (the limit, give or take the network's jitter) and
    the connections used."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    accepted: list[float] = []
    sessions: set[int] = set()

    class Relay(Sink):
        async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802
            session.host_name = hostname
            return responses[:1] + ["250-PIPELINING"] + responses[1:] if pipelining else responses

        async def handle_DATA(self, server, session, envelope):  # noqa: N802
            accepted.append(time.monotonic())
            sessions.add(id(session))
            return "250 OK"

    port = free_port()
    controller = Controller(Relay(), hostname="127.0.0.1", port=port)
    controller.start()
    proxy = DelayingProxy(port, RTT_SECONDS / 2)
    try:
        with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
            sent, seconds = trio.run(send_pass, Path(tmp), proxy.port, False, RTT_USERS, RTT_RATE)
        if sent != RTT_USERS or len(accepted) != RTT_USERS:
            raise RuntimeError(f"sent {sent} of {RTT_USERS}, the relay took {len(accepted)}")
        tens = [accepted[i + 10] - accepted[i] for i in range(len(accepted) - 10)]
        return {
            "relay": (len(accepted) - 1) / (accepted[-1] - accepted[0]),
            "pass": sent / seconds,
            "busiest ten": 10 / min(tens),
            "connections": float(len(sessions)),
        }
    finally:
        proxy.close()
        controller.stop()


def rtt_report() -> dict[str, float]:
    one_by_one, pipelined = rtt_rate(False), rtt_rate(True)
    for label, got in (("one command at a time", one_by_one), ("with PIPELINING", pipelined)):
        print(
            f"   one channel at {RTT_RATE:.0f} messages/s to a relay {RTT_SECONDS * 1000:.0f} ms "
            f"away ({RTT_USERS} emails), {label}: {got['relay']:.1f}/s at the relay "
            f"(goal {RTT_RATE:.0f}/s), {got['pass']:.1f}/s over the whole pass; at most "
            f"{got['busiest ten']:.1f}/s over any ten in a row; "
            f"{got['connections']:.0f} connection(s)"
        )
    return {
        "50ms relay one-by-one msg/s": one_by_one["relay"],
        "50ms relay pipelined msg/s": pipelined["relay"],
        "50ms relay one-by-one pass msg/s": one_by_one["pass"],
        "50ms relay pipelined pass msg/s": pipelined["pass"],
    }


DUE_USERS = int(os.environ.get("KULOO_BENCH_DUE_USERS", "100_000"))
DUE_NOW = 100


async def due_passes(db: Path) -> dict[str, float]:
    import random

    from bench.bench_users import NOW as FILLED_AT
    from bench.bench_users import TAGS, _fill
    from kuloo_daemon.delivery import schedule
    from kuloo_daemon.delivery.message import sender_domain
    from kuloo_daemon.store import channels as channel_store
    from kuloo_daemon.store import delivery as store
    from kuloo_daemon.store.bridge import Store

    read = [0]

    def decide(articles, users, now):
        read[0] += len(users)
        return schedule.decide(articles, users, now)

    async def one_pass(store_, channel: int, now) -> tuple[int, float]:
        read[0], after = 0, 0
        started = time.perf_counter()
        while after is not None:
            _queued, _due, after = await store_.run(
                store.plan, channel, now, decide, sender_domain, after
            )
        return read[0], time.perf_counter() - started

    async with Store.open(db) as s:
        channel = (
            await s.run(
                channel_store.create,
                {"name": "Big", "sender": "Big <b@big.test>", "sequential_tags": TAGS},
                None,
                FILLED_AT,
            )
        ).channel.id
        await s.run(_fill, channel, DUE_USERS, 1, 1)
        now = FILLED_AT + timedelta(hours=1)
        all_read, all_seconds = await one_pass(s, channel, now)
        idle_read, idle_seconds = await one_pass(s, channel, now)
        changed = random.Random(7).sample(range(1, DUE_USERS + 1), DUE_NOW)
        await s.run(store.replan, changed)  # as 100 changed users (or 100 due by time) would
        due = await s.run(store.due_users, channel, now)
        due_read, due_seconds = await one_pass(s, channel, now)
    print(
        f"   planning pass over {DUE_USERS:,} users, every one read (each pass before next_due_at; "
        f"once after the upgrade now): read {all_read:,}, {all_seconds:.2f} s"
    )
    print(f"   planning pass with nobody due: read {idle_read:,}, {idle_seconds * 1000:.1f} ms")
    print(
        f"   planning pass with {due:,} of {DUE_USERS:,} "
        f"due: read {due_read:,}, {due_seconds * 1000:.1f} ms"
    )
    if (due_read, idle_read) != (due, 0):
        raise RuntimeError(f"a pass read {due_read} users for {due} due, {idle_read} with none due")
    return {
        "plan all users s": all_seconds,
        "plan 100 due users ms": due_seconds * 1000,
        "users read with 100 due": due_read,
    }


def main() -> dict[str, float]:
    rate = personalised_rate()
    signed = personalised_rate(key=dkim_key())
    naive = naive_rate()
    ratio = rate / naive
    print(f"   personalised messages for one article: {rate:,.0f}/s (goal >= {RENDER_GOAL:,.0f}/s)")
    print(
        f"   the same, DKIM-signed (dkimpy, RSA 2048): "
        f"{signed:,.0f}/s (goal >= {SIGNED_GOAL:,.0f}/s)"
    )
    print(
        f"   naive Markdown+premailer per recipient: {naive:,.1f}/s -> {ratio:,.0f}x cheaper per "
        f"recipient (goal >= {RATIO_GOAL:.0f}x)"
    )
    sends = send_rate()
    signed_sends = send_rate(signed=True)
    print(
        f"   delivery pass to a local SMTP sink ({SEND_USERS} users, one connection per batch of "
        f"100): {sends:,.0f} messages/s; DKIM-signed: {signed_sends:,.0f} messages/s"
    )
    rtt = rtt_report()
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        due = trio.run(due_passes, Path(tmp) / "kuloo.sqlite3")
    if rate < RENDER_GOAL or ratio < RATIO_GOAL:
        raise RuntimeError("below the goal")
    if signed < SIGNED_GOAL:
        print(
            f"   BELOW GOAL: signed {signed:,.0f}/s < "
            f"{SIGNED_GOAL:,.0f}/s (dkimpy's pure-Python RSA; "
            "a loaded machine measures less)"
        )
    return {
        "render personalised/s": rate,
        "render signed/s": signed,
        "naive per-recipient/s": naive,
        "per-recipient speed-up x": ratio,
        "send to sink msg/s": sends,
        "send signed to sink msg/s": signed_sends,
        **rtt,
        **due,
    }


if __name__ == "__main__":
    if os.environ.get("KULOO_BENCH_DELIVERY_ONLY") == "rtt":
        rtt_report()
    else:
        main()
