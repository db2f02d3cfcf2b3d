"""Entry point of ``kuloo-tui``: the admin UI over the daemon's control socket."""

from __future__ import annotations

import argparse
import sys

from .client import DEFAULT_SOCKET, DaemonClient, default_socket_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kuloo-tui",
        description="The Kuloo Sync admin UI in the terminal: channels, users, sync, over the daemon's "
        "control socket. It reconnects on its own when the daemon restarts. Keys are shown in the "
        "footer; Ctrl+P opens the command palette with every action; Ctrl+Q quits.",
    )
    parser.add_argument(
        "--socket",
        help=f"control socket (default $KULOO_SOCKET, the --config's, or {DEFAULT_SOCKET})",
    )
    parser.add_argument("--config", help="read the socket path from this daemon configuration")
    args = parser.parse_args(argv)
    try:
        path = default_socket_path(args.socket, args.config)
    except (OSError, ValueError) as exc:
        print(f"kuloo-tui: cannot read {args.config}: {exc}", file=sys.stderr)
        return 2
    from .app import make_app

    make_app(DaemonClient(path)).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
