"""`make demo`: sellsim, the daemon and a seeded, connected demo channel, all under ./demo-state.

Starts sellsim with config/sellsim-demo.json on a free loopback port, writes
demo-state/kuloo.toml (config/demo.toml pointed at that sellsim), runs the daemon, creates
the demo channel with sellsim's demo token, and prints how to talk to the daemon.
Ctrl-C stops everything. ``--smoke`` starts it all, checks it, and stops (used by the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
from kuloo_daemon.control.client import ControlClient, ControlError  # noqa: E402

CHANNEL = {
    "name": "Demo channel",
    "plan": "pro",
    "sequential_tags": ["welcome", "onboarding", "upsell"],
    "sender": "Kuloo Demo <news@kuloo-demo.test>",
    "postal_address": "Kuloo Demo, 1 Example Street, Springfield",
}


def toml_dump(data: dict) -> str:
    out = []
    for section, body in data.items():
        out.append(f"[{section}]")
        for key, value in body.items():
            out.append(f"{key} = {json.dumps(value)}")
        out.append("")
    return "\n".join(out)


def start_sellsim(state: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [str(BIN / "kuloo-sell-sim"), "--host", "127.0.0.1", "--port", "0",
         "--seed", str(ROOT / "config" / "sellsim-demo.json"), "--state", str(state / "sellsim-state.json")],
        stdout=subprocess.PIPE, text=True,
    )
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout=30):
        proc.kill()
        raise SystemExit("demo: sellsim did not start within 30 s")
    line = proc.stdout.readline().strip()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"demo: unexpected first line from sellsim: {line!r}")
    return proc, line[line.index("http://"):]


def write_config(state: Path, sell_url: str) -> Path:
    data = tomllib.loads((ROOT / "config" / "demo.toml").read_text())
    data["daemon"]["state_dir"] = str(state)
    data["control"]["socket"] = str(state / "control.sock")
    data["credentials"]["directory"] = str(state / "credentials")
    data["sell"]["base_url"] = sell_url
    data["articles"]["root"] = str(ROOT / "config" / "articles")
    data["delivery"]["maildir"] = str(state / "maildir")
    path = state / "kuloo.toml"
    path.write_text("# Written by `make demo` from config/demo.toml.\n" + toml_dump(data))
    return path


def make_credentials(state: Path) -> None:
    creds = state / "credentials"
    creds.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = creds / "link-signing-key"
    if not key.exists():
        key.write_text(secrets.token_urlsafe(32))
        key.chmod(0o600)


def connect(path: str, proc: subprocess.Popen, timeout: float = 30) -> ControlClient:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return ControlClient(path, timeout=30, client_name="demo")
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"demo: the daemon exited with {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise SystemExit("demo: the daemon's control socket did not come up") from None
            time.sleep(0.1)


def ensure_channel(client: ControlClient, token: str) -> dict:
    try:
        doc = client.call("channels.get", {"name": CHANNEL["name"]})
    except ControlError as exc:
        if exc.code != "not_found":
            raise
        doc = client.call("channels.create", {**CHANNEL, "api_token": token})
    if "channels.verify" in client.server.get("methods", []):
        doc = client.call("channels.verify", {"id": doc["id"]})
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", default=str(ROOT / "demo-state"), help="folder for all demo state")
    parser.add_argument("--smoke", action="store_true", help="start, check, stop (for tests)")
    args = parser.parse_args(argv)
    state = Path(args.state).resolve()
    state.mkdir(parents=True, exist_ok=True)
    make_credentials(state)
    seed = json.loads((ROOT / "config" / "sellsim-demo.json").read_text())
    token = seed["accounts"][0]["tokens"][0]["token"]

    sellsim, url = start_sellsim(state)
    daemon = None
    try:
        config = write_config(state, url)
        daemon = subprocess.Popen([str(BIN / "kuloo-daemon"), "run", "--config", str(config)])
        sock = str(state / "control.sock")
        with connect(sock, daemon) as client:
            doc = ensure_channel(client, token)
            articles = client.call("articles.import", {"channel": doc["id"], "path": "."})
            status = client.call("status")
        ctl = f"{BIN / 'kuloo-ctl'} --socket {sock}"
        print(f"""
== Kuloo Sync demo ==
sellsim (Zendesk Sell simulator): {url}   (state: {state / 'sellsim-state.json'})
daemon: pid {status['pid']}, store {status['store']}
links service (unsubscribe, frequency, signup): {(status.get('links') or {}).get('url')}
business clock: {status['clock']['mode']}, now {status['clock']['now']} (it moves only when you move it)
channel #{doc['id']} {doc['name']!r}: plan {doc['plan']}, token {doc['api_token']}, connection {doc['connection']['status']}
{chr(10).join('  - ' + p for p in doc['connection']['problems'])}
articles: {articles['imported']} new, {articles['updated']} updated, {articles['unchanged']} unchanged, \
{len(articles['problems'])} problem(s) (the clipped one needs its page served); emails go to {state / 'maildir'}
Try, in another terminal:
  {ctl} status
  {ctl} channels.get '{{"id": {doc['id']}}}'
  {ctl} channels.update '{{"id": {doc['id']}, "plan": "enterprise"}}'
  {ctl} --events status        # live events
  {ctl} users.add '{{"channel": {doc['id']}, "email": "ann@example.com", "promo_tags": ["welcome"]}}'
  {ctl} clock.advance '{{"seconds": 86400}}'   # a day passes: due work (sequences, digests) runs before the reply
  {ctl} outbox.list '{{"channel": {doc['id']}}}'
Ctrl-C stops the daemon and sellsim.
""", flush=True)
        if args.smoke:
            return 0
        try:
            daemon.wait()
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        for proc in (daemon, sellsim):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (daemon, sellsim):
            if proc is not None:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(ROOT)
    raise SystemExit(main())
