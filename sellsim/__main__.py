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
from .options import make_options
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


def _read_seed(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ValueError(f"seed {path}: no such file") from None
    except OSError as e:
        raise ValueError(f"seed {path}: cannot read ({e.strerror})") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"seed {path}: not valid JSON ({e})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kuloo-sell-sim",
        description="Serve a simulated Zendesk Sell API v2 (see sellsim/README.md). Prints "
        "'sellsim listening on http://HOST:PORT' once it accepts connections. Exit codes: "
        "2 bad arguments, seed or state file; 1 cannot listen.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one (0)")
    parser.add_argument("--seed", help="JSON seed file (default: the built-in default seed)")
    parser.add_argument(
        "--state",
        help="JSON file that keeps the data across restarts "
        "(loaded instead of the seed when it exists)",
    )
    parser.add_argument(
        "--option",
        "-o",
        action="append",
        type=_option,
        default=[],
        help="simulator option NAME=VALUE (JSON value), repeatable",
    )
    args = parser.parse_args(argv)
    try:
        make_options(dict(args.option))  # option errors first, without a file name
        seed = _read_seed(args.seed) if args.seed else default_seed()
        try:
            sim = Simulator(seed, dict(args.option), state_path=args.state)
        except ValueError as e:
            where = (
                ""
                if args.state and str(e).startswith("state file")
                else (f"seed {args.seed}: " if args.seed else "")
            )
            raise ValueError(f"{where}{e}") from None
        if args.state:  # write it now: a bad --state path fails here, not at the first save
            sim.dirty = True
            try:
                sim.save_if_dirty()
            except OSError as e:
                raise ValueError(f"state file {args.state}: cannot write ({e.strerror})") from None
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
