"""``kuloo-daemon``: run the daemon, apply migrations, check a configuration file, back the
store up and restore it (``store.backup``).

``run`` and ``migrate`` first take the state folder's single-daemon lock
(``store.files.hold_state``) and hold it until they exit: a second daemon, or ``migrate``
while a daemon runs, is refused. A store that cannot be used (a damaged or foreign file,
a read-only or unwritable folder, a start-up that takes too long) ends the command with
exit status 1 and one line on stderr naming the file and the problem. With ``[store] url``
(PostgreSQL) there is no lock: several daemons share one database; an unreachable server
or a schema newer than the code ends the command the same way, naming the server.
"""

from __future__ import annotations

import argparse
import os
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
    run.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"TOML configuration (default {DEFAULT_CONFIG})"
    )
    run.add_argument(
        "--socket",
        help="bind the control socket here instead of [control] socket "
        "(ignored under socket activation)",
    )

    mig = sub.add_parser("migrate", help="create or upgrade the database schema, then exit")
    mig.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"TOML configuration (default {DEFAULT_CONFIG})"
    )

    chk = sub.add_parser("check-config", help="report every problem in a configuration file")
    chk.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"TOML configuration (default {DEFAULT_CONFIG})"
    )

    dk = sub.add_parser(
        "dkim-record",
        help="print the DNS TXT record of the DKIM key ([dkim])",
        description="Prints the TXT record to publish at "
        "<selector>._domainkey.<domain> for the dkim-private-key credential, in "
        "zone-file form (p= split into strings of at most 255 characters).",
    )
    dk.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"TOML configuration (default {DEFAULT_CONFIG})"
    )

    bak = sub.add_parser(
        "backup",
        help="write a consistent copy of the SQLite database, "
        "while the daemon runs (PostgreSQL: use pg_dump)",
        description="Writes a consistent copy of the SQLite database to a new file "
        "(mode 0600: it holds the channels' Sell tokens) while the daemon runs. Keep it "
        "with the credentials folder: both are needed to restore.",
    )
    bak.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"TOML configuration (default {DEFAULT_CONFIG})"
    )
    bak.add_argument(
        "--to", required=True, metavar="PATH", help="the new backup file (never overwritten)"
    )

    res = sub.add_parser(
        "restore",
        help="put a backup in place of the database (the daemon stopped)",
        description="Checks that the copy opens and that its schema is one this version "
        "knows, moves the current database aside (kept, named .before-restore-TIME), and "
        "puts the copy in place. The next sync reads Sell whole and looks up users "
        "before pushing them; delivery starts paused until `kuloo-ctl delivery.resume`.",
    )
    res.add_argument(
        "--config", default=DEFAULT_CONFIG, help=f"TOML configuration (default {DEFAULT_CONFIG})"
    )
    res.add_argument("--from", dest="source", required=True, metavar="PATH", help="the backup file")
    return parser


def _load(path: str, sending: bool = False) -> config_mod.Config | None:
    try:
        config = config_mod.load(path)
        if sending and (problems := config_mod.sending_problems(config)):
            raise config_mod.ConfigError(problems)
        return config
    except config_mod.ConfigError as exc:
        if len(exc.problems) == 1:  # one line, as systemd's journal shows it best
            print(f"kuloo-daemon: {path}: {exc.problems[0]}", file=sys.stderr)
            return None
        print(f"kuloo-daemon: {path}: {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = _load(args.config, sending=args.command in ("check-config", "run"))
    if config is None:
        return 2
    if args.command == "dkim-record":
        return _dkim_record(config)
    if args.command == "check-config":
        for warning in config_mod.warnings(config):
            print(f"kuloo-daemon: {args.config}: warning: {warning}", file=sys.stderr)
        database = config.store_url or config.database_path
        print(f"{args.config}: OK (database {database}, control socket {config['control.socket']})")
        return 0
    from . import logs

    logs.configure(config["log.format"], config["log.level"])
    if args.command == "run":
        import structlog

        for warning in config_mod.warnings(config):
            structlog.get_logger("kuloo.cli").warning("configuration warning", problem=warning)
    from .store.files import StoreFileError, hold_state, share_state

    if args.command in ("backup", "restore") and config.store_url:
        print(
            f"kuloo-daemon: {args.command}: the store is PostgreSQL ({config.store_url}); "
            "back it up and restore it with pg_dump and pg_restore",
            file=sys.stderr,
        )
        return 2
    try:
        if args.command == "backup":  # beside a running daemon: no lock
            return _backup(config, args.to)
        if args.command == "restore":
            with hold_state(config.state_dir, config.database_path):
                return _restore(config, args.source)
        # SQLite serves one daemon (the lock); on PostgreSQL several daemons share the work.
        holding = (
            share_state(config.state_dir)
            if config.store_url
            else hold_state(config.state_dir, config.database_path)
        )
        with holding:
            return _migrate(config) if args.command == "migrate" else _run(config, args.socket)
    except OSError as exc:  # the lock file could not be written: a full disk says so in one line
        if not _disk_full(exc):
            raise
        return 1
    except StoreFileError as exc:
        print(f"kuloo-daemon: {exc}", file=sys.stderr)
        if exc.stuck:  # tortoise's threads would keep the interpreter from exiting
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        return 1


def _dkim_record(config: config_mod.Config) -> int:
    from .rules.signing import DkimKeyError, dkim_record

    if not config["dkim.domain"]:
        print("kuloo-daemon: dkim-record: [dkim] domain and selector are not set", file=sys.stderr)
        return 2
    try:
        key = config_mod.dkim_key(config)
    except (DkimKeyError, OSError) as exc:
        print(
            f"kuloo-daemon: credentials.dkim_private_key: the DKIM key does not load: {exc}",
            file=sys.stderr,
        )
        return 2
    print(dkim_record(key))
    return 0


def _backup(config: config_mod.Config, target: str) -> int:
    from .store.backup import backup

    def progress(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\rcopied {done:,} of {total:,} pages", end="", file=sys.stderr, flush=True)

    written = backup(config.database_path, target, progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(
        f"{written}: backup of {config.database_path} written (mode 0600); keep it with the "
        f"credentials folder ({config.credentials_dir() or 'not configured'})"
    )
    return 0


def _restore(config: config_mod.Config, source: str) -> int:
    from .store.backup import restore

    aside = restore(source, config.database_path, config.state_dir)
    kept = f"the previous database is kept as {aside}" if aside else "there was no database before"
    print(
        f"{config.database_path}: restored from {source}; {kept}. "
        "Delivery is paused: check the outbox, then run `kuloo-ctl delivery.resume`."
    )
    return 0


def _migrate(config: config_mod.Config) -> int:
    from .store.bridge import migrate_blocking, store_location

    location = store_location(config)
    migrate_blocking(location, progress=_print_progress)
    print(f"{location}: schema up to date")
    return 0


def _run(config: config_mod.Config, socket_path: str | None) -> int:
    import trio

    from .app import run_daemon
    from .store.files import StoreFileError

    try:
        trio.run(lambda: run_daemon(config, socket_path=socket_path))
    except KeyboardInterrupt:  # SIGINT before the signal handler was installed
        return 130
    except RuntimeError as exc:  # e.g. another daemon on the socket
        print(f"kuloo-daemon: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:  # the store failed inside a nursery
        if _disk_full(group):
            return 1
        found, rest = group.split(StoreFileError)
        if found is None or rest is not None:
            raise
        raise _first(found) from None
    except Exception as exc:
        if _disk_full(exc):
            return 1
        raise
    return 0


def _disk_full(exc: BaseException) -> bool:
    """A full disk at start-up: one line naming the problem (no traceback); True if it was."""
    from .store.health import FULL, classify

    leaves = [exc]
    while any(isinstance(e, BaseExceptionGroup) for e in leaves):
        leaves = [
            x for e in leaves for x in (e.exceptions if isinstance(e, BaseExceptionGroup) else (e,))
        ]
    full = next((e for e in leaves if classify(e) == FULL), None)
    if full is None:
        return False
    print(
        "kuloo-daemon: cannot start: the disk under the database is full "
        f"({type(full).__name__}: {str(full).splitlines()[0][:160] if str(full) else ''}); "
        "free some space, then start again",
        file=sys.stderr,
    )
    return True


def _first(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def _print_progress(event: str, app: str, name: str) -> None:
    if event == "apply_done":
        print(f"applied {app}.{name}")


if __name__ == "__main__":
    raise SystemExit(main())
