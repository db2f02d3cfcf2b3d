"""``kuloo-daemon``: run the daemon, apply migrations, check a configuration file."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from . import config as config_mod

DEFAULT_CONFIG = "/etc/kuloo/kuloo.toml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kuloo-daemon",
        description="Kuloo Sync daemon: keeps Kuloo channels and Zendesk Sell in two-way sync "
        "and sends their drip and digest emails.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"kuloo-daemon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground (as systemd does)")
    run.add_argument("--config", default=DEFAULT_CONFIG, help=f"TOML configuration (default {DEFAULT_CONFIG})")
    run.add_argument("--socket", help="bind the control socket here instead of [control] socket "
                     "(ignored under socket activation)")

    mig = sub.add_parser("migrate", help="create or upgrade the database schema, then exit")
    mig.add_argument("--config", default=DEFAULT_CONFIG, help=f"TOML configuration (default {DEFAULT_CONFIG})")

    chk = sub.add_parser("check-config", help="report every problem in a configuration file")
    chk.add_argument("--config", default=DEFAULT_CONFIG, help=f"TOML configuration (default {DEFAULT_CONFIG})")
    return parser


def _load(path: str) -> config_mod.Config | None:
    try:
        return config_mod.load(path)
    except config_mod.ConfigError as exc:
        print(f"kuloo-daemon: {path}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = _load(args.config)
    if config is None:
        return 2
    if args.command == "check-config":
        print(f"{args.config}: OK (database {config.database_path}, control socket {config['control.socket']})")
        return 0
    from . import logs

    logs.configure(config["log.format"], config["log.level"])
    if args.command == "migrate":
        from .store.bridge import migrate_blocking

        migrate_blocking(config.database_path, progress=_print_progress)
        print(f"{config.database_path}: schema up to date")
        return 0

    import trio

    from .app import run_daemon

    try:
        trio.run(lambda: run_daemon(config, socket_path=args.socket))
    except KeyboardInterrupt:  # SIGINT before the signal handler was installed
        return 130
    except RuntimeError as exc:  # e.g. another daemon on the socket
        print(f"kuloo-daemon: {exc}", file=sys.stderr)
        return 1
    return 0


def _print_progress(event: str, app: str, name: str) -> None:
    if event == "apply_done":
        print(f"applied {app}.{name}")


if __name__ == "__main__":
    raise SystemExit(main())
