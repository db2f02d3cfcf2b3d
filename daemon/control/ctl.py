"""``kuloo-ctl``: call any control method of a running daemon and print the JSON result.

Two forms: ``kuloo-ctl METHOD [PARAMS]`` (any method, raw JSON in and out) and the
friendly subcommands of ``ctl_commands`` (``users list``, ``sync errors``, …: options in,
tables out, ``--json`` for the raw documents). The first word that is not an option
decides which. Every failure is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import NoReturn

from . import ctl_commands
from .client import ControlClient, ControlError
from .protocol import Event, ProtocolError, flaw

DEFAULT_SOCKET = "/run/kuloo/control.sock"
GLOBAL_WITH_VALUE = ("--socket", "--config")
FRIENDLY = """friendly subcommands (kuloo-ctl GROUP ACTION --help for each):
  users list|show|add|reset   users of a channel; reset a user's sequence
  sync run|runs|errors        sync now, the run history, the sync errors
  channel verify              check the channel's Sell connection
  outbox list                 outgoing mail
They print aligned tables (--json: the raw documents) and take --channel ID|NAME
(default: the daemon's only channel). Example: kuloo-ctl users list --query ada"""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and --help says the rest)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _first_word(argv: list[str]) -> str | None:
    words = iter(argv)
    for word in words:
        if word in GLOBAL_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


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


class StdoutClosed(Exception):
    """Whoever read our output went away (``kuloo-ctl ... | head``); not a daemon failure."""


def _out(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise StdoutClosed from None


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else argv)
    except StdoutClosed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


def _main(argv: list[str]) -> int:
    if _first_word(argv) in ctl_commands.GROUPS:
        return _friendly(argv)
    parser = OneLineParser(
        prog="kuloo-ctl",
        description="Call a method of the running Kuloo daemon over its control socket and print "
        "the JSON result. Examples: kuloo-ctl status; kuloo-ctl channels.list; "
        'kuloo-ctl channels.update \'{"id": 1, "plan": "pro"}\'',
        epilog=FRIENDLY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--socket",
        help=f"control socket (default $KULOO_SOCKET, the --config's, or {DEFAULT_SOCKET})",
    )
    parser.add_argument("--config", help="read the socket path from this daemon configuration")
    parser.add_argument("--json", action="store_true", help="(the raw form always prints JSON)")
    parser.add_argument(
        "--events",
        action="store_true",
        help="after the call, print events as they come (Ctrl-C ends)",
    )
    parser.add_argument(
        "method", help="method name, e.g. status, channels.list; 'hello' lists them all"
    )
    parser.add_argument(
        "params", nargs="?", default="{}", help="parameters as a JSON object (default {})"
    )
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


def _friendly(argv: list[str]) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket",
        default=argparse.SUPPRESS,
        help=f"control socket (default $KULOO_SOCKET, the --config's, or {DEFAULT_SOCKET})",
    )
    common.add_argument(
        "--config", default=argparse.SUPPRESS, help="read the socket path from this configuration"
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the method's raw JSON document instead of a table",
    )
    parser = OneLineParser(
        prog="kuloo-ctl",
        description="Script the common actions of the Kuloo daemon.",
        epilog=FRIENDLY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--socket", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    ctl_commands.add_commands(
        parser.add_subparsers(dest="group", required=True, metavar="GROUP"), common
    )
    args = parser.parse_args(argv)
    args.exit_status, args.failure, args.hints = 0, None, []
    path = _socket_path(args)
    # a sync of a large channel takes as long as it takes (Ctrl-C stops waiting)
    client = _connect(path, None if args.handler is ctl_commands.sync_run else 60)
    if isinstance(client, int):
        return client
    what = f"{args.group} {args.action}"
    with client:
        try:
            raw, lines = args.handler(client, args)
        except KeyboardInterrupt:
            print("kuloo-ctl: interrupted", file=sys.stderr)
            return 130
        except ctl_commands.CommandError as exc:
            print(f"kuloo-ctl: {what}: {exc}", file=sys.stderr)
            return 1
        except CALL_FAILURES as exc:
            return _call_failed(exc, what)
    _out(json.dumps(raw, indent=2, ensure_ascii=False) if args.json else "\n".join(lines))
    for hint in args.hints:
        print(hint, file=sys.stderr)
    if args.failure:
        print(f"kuloo-ctl: {args.failure}", file=sys.stderr)
    return args.exit_status


CALL_FAILURES = (ControlError, ProtocolError, OSError)  # OSError covers TimeoutError


def _call_failed(exc: Exception, what: str) -> int:
    """Say in one line on stderr why a call failed; the exit status."""
    if isinstance(exc, ControlError):
        message = f"{what} failed: {_one_line(exc.message)} ({exc.code})"
    elif isinstance(exc, ProtocolError):
        message = f"the daemon's answer is not the control protocol: {_one_line(exc.message)}"
    elif isinstance(exc, TimeoutError):
        message = "no answer from the daemon within 60 s"
    else:
        message = f"connection to the daemon failed: {getattr(exc, 'strerror', None) or exc}"
    print(f"kuloo-ctl: {message}", file=sys.stderr)
    return 1


def _connect(path: str, timeout: float | None) -> ControlClient | int:
    """A connected client, or the exit status after saying (one line) why there is none."""
    try:
        return ControlClient(path, timeout=timeout)
    except ControlError as exc:
        print(
            f"kuloo-ctl: the daemon at {path} refused the connection: {exc.message} ({exc.code})",
            file=sys.stderr,
        )
    except ProtocolError as exc:
        print(
            f"kuloo-ctl: {path} does not answer in the control protocol: {_one_line(exc.message)}",
            file=sys.stderr,
        )
    except OSError as exc:
        print(
            f"kuloo-ctl: cannot reach the daemon at {path}: {exc.strerror or exc}", file=sys.stderr
        )
    return 1


def _run(path: str, args: argparse.Namespace, params: dict) -> int:
    """Every failure is one line on stderr and a non-zero exit; never a traceback."""
    client = _connect(path, None if args.events else 60)
    if isinstance(client, int):
        return client
    with client:
        try:
            result = client.server if args.method == "hello" else client.call(args.method, params)
            _out(json.dumps(result, indent=2, ensure_ascii=False))
            if args.events:
                client.call("subscribe")
                try:
                    while True:
                        message = client.read_message()
                        if isinstance(message, Event):
                            _out(
                                json.dumps(
                                    {"event": message.event, "data": message.data},
                                    ensure_ascii=False,
                                )
                            )
                except KeyboardInterrupt:
                    return 0  # Ctrl-C is how --events ends
        except CALL_FAILURES as exc:
            return _call_failed(exc, args.method)
    return 0


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


if __name__ == "__main__":
    raise SystemExit(main())
