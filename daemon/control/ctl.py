"""``kuloo-ctl``: call any control method of a running daemon and print the JSON result."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .client import ControlClient, ControlError
from .protocol import Event, ProtocolError, flaw

DEFAULT_SOCKET = "/run/kuloo/control.sock"


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return args.socket
    if os.environ.get("KULOO_SOCKET"):
        return os.environ["KULOO_SOCKET"]
    if args.config:
        from ..config import ConfigError, load

        try:
            return load(args.config)["control.socket"]
        except ConfigError as exc:
            raise SystemExit(f"kuloo-ctl: {args.config}: {'; '.join(exc.problems)}") from None
    return DEFAULT_SOCKET


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kuloo-ctl",
        description="Call a method of the running Kuloo daemon over its control socket and print "
        "the JSON result. Examples: kuloo-ctl status; kuloo-ctl channels.list; "
        "kuloo-ctl channels.update '{\"id\": 1, \"plan\": \"pro\"}'",
    )
    parser.add_argument("--socket", help=f"control socket (default $KULOO_SOCKET, the --config's, or {DEFAULT_SOCKET})")
    parser.add_argument("--config", help="read the socket path from this daemon configuration")
    parser.add_argument("--events", action="store_true", help="after the call, print events as they come (Ctrl-C ends)")
    parser.add_argument("method", help="method name, e.g. status, channels.list; 'hello' lists them all")
    parser.add_argument("params", nargs="?", default="{}", help="parameters as a JSON object (default {})")
    args = parser.parse_args(argv)

    try:
        params = json.loads(args.params)
    except ValueError as exc:
        print(f"kuloo-ctl: PARAMS is not valid JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(params, dict):
        print("kuloo-ctl: PARAMS must be a JSON object, e.g. '{\"id\": 1}'", file=sys.stderr)
        return 2
    problem = flaw(params, "PARAMS")
    if problem:
        print(f"kuloo-ctl: {problem}", file=sys.stderr)
        return 2
    path = _socket_path(args)
    try:
        return _run(path, args, params)
    except KeyboardInterrupt:
        print("kuloo-ctl: interrupted", file=sys.stderr)
        return 130


def _run(path: str, args: argparse.Namespace, params: dict) -> int:
    """Every failure is one line on stderr and a non-zero exit; never a traceback."""
    try:
        client = ControlClient(path, timeout=None if args.events else 60)
    except ControlError as exc:
        print(f"kuloo-ctl: the daemon at {path} refused the connection: {exc.message} ({exc.code})", file=sys.stderr)
        return 1
    except ProtocolError as exc:
        print(f"kuloo-ctl: {path} does not answer in the control protocol: {_one_line(exc.message)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"kuloo-ctl: cannot reach the daemon at {path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    with client:
        try:
            result = client.server if args.method == "hello" else client.call(args.method, params)
            print(json.dumps(result, indent=2, ensure_ascii=False))
            if args.events:
                client.call("subscribe")
                try:
                    while True:
                        message = client.read_message()
                        if isinstance(message, Event):
                            print(json.dumps({"event": message.event, "data": message.data}, ensure_ascii=False),
                                  flush=True)
                except KeyboardInterrupt:
                    return 0  # Ctrl-C is how --events ends
        except ControlError as exc:
            print(f"kuloo-ctl: {args.method} failed: {exc.message} ({exc.code})", file=sys.stderr)
            return 1
        except ProtocolError as exc:
            print(f"kuloo-ctl: the daemon's answer is not the control protocol: {_one_line(exc.message)}", file=sys.stderr)
            return 1
        except TimeoutError:
            print("kuloo-ctl: no answer from the daemon within 60 s", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"kuloo-ctl: connection to the daemon failed: {exc.strerror or exc}", file=sys.stderr)
            return 1
    return 0


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


if __name__ == "__main__":
    raise SystemExit(main())
