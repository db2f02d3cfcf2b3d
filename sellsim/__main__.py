"""Entry point of ``kuloo-sell-sim``: serve a seeded simulator on a loopback port.

Prints ``sellsim listening on http://HOST:PORT`` as its first stdout line (flushed) once it
accepts connections; ``--port 0`` picks a free port. ``--state FILE`` keeps the data across
restarts (loaded instead of the seed when it exists, saved twice a second and on exit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from .app import Simulator
from .seeds import default_seed
from .server import serve


def _option(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("options are NAME=VALUE")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kuloo-sell-sim", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", help="JSON seed file (default: the built-in default seed)")
    parser.add_argument("--state", help="JSON file that keeps the data across restarts")
    parser.add_argument("--option", "-o", action="append", type=_option, default=[],
                        help="simulator option NAME=VALUE (JSON value), repeatable")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.seed:
            with open(args.seed, encoding="utf-8") as f:
                seed = json.load(f)
        else:
            seed = default_seed()
        sim = Simulator(seed, dict(args.option), state_path=args.state)
    except (OSError, ValueError) as e:
        print(f"kuloo-sell-sim: {e}", file=sys.stderr)
        return 2

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready(url: str) -> None:
            print(f"sellsim listening on {url}", flush=True)

        await serve(sim, args.host, args.port, ready, stop)

    try:
        asyncio.run(run())
    except OSError as e:
        print(f"kuloo-sell-sim: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
