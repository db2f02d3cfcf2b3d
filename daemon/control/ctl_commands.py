"""``kuloo-ctl``'s friendly subcommands for scripting the common actions.

=====================  ===========================================================
``users list``         ``users.list`` (filters as options, one page; ``--after``)
``users show USER``    ``users.get`` (+ ``users.progress`` in the table form)
``users add EMAIL``    ``users.add``
``users reset USER``   ``users.reset_sequence`` (idempotent)
``users erase EMAIL``  ``users.erase`` (the email typed again, or ``--confirm EMAIL``)
``sync run``           ``sync.run`` (waits for the run to end)
``sync runs``          ``sync.runs``
``sync errors``        ``sync.errors``
``channel verify``     ``channels.verify`` (exit status 1 unless the connection is verified)
``channel delete``     ``channels.delete`` (the channel's name typed out, or ``--confirm NAME``)
``outbox list``        ``outbox.list``
=====================  ===========================================================

``USER`` is a user id or an email address; ``--channel`` takes a channel id or name and
may be left out when the daemon has one channel. Output is an aligned table (or
``key  value`` lines for one document) by default, the methods' raw JSON documents with
``--json``. Paging hints go to stderr, so stdout stays the table.

Parsing and rendering only: every action is one of the control methods, called through
the blocking ``ControlClient``. The raw ``kuloo-ctl METHOD PARAMS`` form is ``ctl.py``'s.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..vocabulary import Frequency, OutboxState, Source
from .client import ControlClient

GROUPS = ("users", "sync", "channel", "outbox")
SUBSCRIPTIONS = (*(f.value for f in Frequency), "unsubscribed")
SOURCES = tuple(s.value or "app" for s in Source)  # "app": the blank source (users.list takes "")
CRM_KINDS = ("lead", "contact", "none")
OUTBOX_STATES = tuple(s.value for s in OutboxState)


class CommandError(Exception):
    """A one-line failure of a friendly command (exit status 1)."""


Output = tuple[Any, list[str]]  # the raw documents (for --json), the text lines


# ----------------------------------------------------------------------------- rendering


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Aligned columns, two spaces apart; the last column is never padded (it may be long)."""
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    out = []
    for row in [list(headers), *cells]:
        line = "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True))
        out.append((line + "  " + row[-1]).rstrip() if len(row) > 1 else row[0])
    return out


def fields(pairs: Sequence[tuple[str, Any]]) -> list[str]:
    """One document as ``key  value`` lines, keys aligned."""
    width = max(len(k) for k, _ in pairs)
    return [f"{k.ljust(width)}  {_cell(v)}".rstrip() for k, v in pairs]


def _cell(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return " ".join(str(value).split())  # one line per row, whatever the text holds


def _crm(doc: dict[str, Any] | None) -> str:
    return f"{doc['kind']} {doc['id']}" if doc else "-"


def _name(user: dict[str, Any]) -> str:
    return " ".join(p for p in (user.get("first_name"), user.get("last_name")) if p)


def _subscription(user: dict[str, Any]) -> str:
    return "unsubscribed" if user["unsubscribed"] else user["frequency"]


def _bounce(bounce: dict[str, Any] | None) -> str:
    """A bounced address: its status, the remote server's words and when; else "no"."""
    if not bounce:
        return "no"
    words = " ".join(w for w in (bounce["status"], bounce["reason"]) if w)
    return f"{words} ({bounce['at']})" if bounce.get("at") else words


def _counts(counts: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(counts.items()) if v)


def _hint(args: argparse.Namespace, text: str) -> None:
    """A paging hint, printed on stderr after the table (``--json`` has ``next`` in the
    document)."""
    if not args.json:
        args.hints.append(text)


# ----------------------------------------------------------------------------- resolving


def channel_id(client: ControlClient, given: str | None) -> int:
    """``--channel`` as an id or a name; the only channel when left out."""
    if given is None:
        channels = client.call("channels.list")["channels"]
        if len(channels) == 1:
            return channels[0]["id"]
        if not channels:
            raise CommandError(
                "the daemon has no channel yet "
                "(create one: kuloo-ctl channels.create '{\"name\": …}')"
            )
        names = ", ".join(f"{c['id']} ({c['name']})" for c in channels)
        raise CommandError(
            f"{len(channels)} channels, say which with --channel ID or NAME: {names}"
        )
    if given.isdigit():
        return int(given)
    return client.call("channels.get", {"name": given})["id"]


def user_doc(client: ControlClient, given: str, channel: str | None) -> dict[str, Any]:
    """``USER`` as an id or an email (the email in ``--channel``, or the only channel)."""
    if given.isdigit():
        return client.call("users.get", {"id": int(given)})
    if "@" not in given:
        raise CommandError(f"{given!r} is neither a user id nor an email address")
    return client.call("users.get", {"channel": channel_id(client, channel), "email": given})


# ----------------------------------------------------------------------------- commands


def users_list(client: ControlClient, args: argparse.Namespace) -> Output:
    params: dict[str, Any] = {"channel": channel_id(client, args.channel), "limit": args.limit}
    for key in ("query", "subscription", "promo", "crm_kind", "after"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if args.source is not None:
        params["source"] = "" if args.source == "app" else args.source
    if args.has_sync_error is not None:
        params["has_sync_error"] = args.has_sync_error
    if args.bounced is not None:
        params["bounced"] = args.bounced
    page = client.call("users.list", params)
    rows = [
        (
            u["id"],
            u["email"],
            _name(u),
            _subscription(u),
            u["source"] or "app",
            u["promo_tags"],
            _crm(u["crm"]),
            "yes" if u["sync_error"] else "",
            (u.get("bounce") or {}).get("status", ""),
        )
        for u in page["users"]
    ]
    lines = table(
        ("ID", "EMAIL", "NAME", "SUBSCRIPTION", "SOURCE", "PROMO", "CRM", "SYNC ERROR", "BOUNCED"),
        rows,
    )
    more = f"; next page: --after {page['next']}" if page["next"] else ""
    _hint(args, f"{len(page['users'])} of {page['total']} user(s){more}")
    return page, lines


def _user_lines(u: dict[str, Any]) -> list[str]:
    return fields(
        [
            ("id", u["id"]),
            ("channel", u["channel"]),
            ("email", u["email"]),
            ("name", _name(u)),
            ("frequency", u["frequency"]),
            ("unsubscribed", u["unsubscribed"]),
            ("add to CRM", u["add_to_crm"]),
            ("promo tags", u["promo_tags"]),
            ("source", u["source"] or "app"),
            ("CRM", _crm(u["crm"])),
            ("sync error", u["sync_error"]),
            ("bounced", _bounce(u.get("bounce"))),
            ("last active", u["last_active"]),
            ("KulooId", u["kuloo_id"]),
            ("created", u["created_at"]),
            ("updated", u["updated_at"]),
        ]
    )


def users_show(client: ControlClient, args: argparse.Namespace) -> Output:
    user = user_doc(client, args.user, args.channel)
    if args.json:
        return user, []
    progress = client.call("users.progress", {"id": user["id"]})
    lines = _user_lines(user)
    steps = [("sent", s["article"], s["title"], s["sent_at"]) for s in progress["sent"]]
    if progress["next"]:
        steps.append(
            (
                "next",
                progress["next"]["article"],
                progress["next"]["title"],
                progress["next"]["due_at"],
            )
        )
    lines.append("")
    lines += (
        table(("SEQUENCE", "ARTICLE", "TITLE", "AT"), steps)
        if steps
        else [
            "sequence: nothing sent, nothing due "
            "(no sequence article carries the user's promo tags)"
        ]
    )
    return user, lines


def users_add(client: ControlClient, args: argparse.Namespace) -> Output:
    params: dict[str, Any] = {"channel": channel_id(client, args.channel), "email": args.email}
    for key in ("first_name", "last_name", "frequency"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if args.promo:
        params["promo_tags"] = args.promo
    if args.add_to_crm:
        params["add_to_crm"] = True
    if args.unsubscribed:
        params["unsubscribed"] = True
    user = client.call("users.add", params)
    return user, _user_lines(user)


def users_reset(client: ControlClient, args: argparse.Namespace) -> Output:
    user = user_doc(client, args.user, args.channel)
    result = client.call("users.reset_sequence", {"id": user["id"]})
    return result, [
        f"user {user['id']} ({user['email']}): sequence reset, {result['cleared']} sent article(s) "
        "cleared; it starts again from its first article"
    ]


def users_clear_bounce(client: ControlClient, args: argparse.Namespace) -> Output:
    user = user_doc(client, args.user, args.channel)
    if not user.get("bounce"):
        return user, [f"user {user['id']} ({user['email']}) has not bounced: nothing to clear"]
    done = client.call("users.update", {"id": user["id"], "clear_bounce": True})
    return done, [
        f"user {done['id']} ({done['email']}): bounce cleared ({_bounce(user['bounce'])}); "
        "mail to the address resumes from now"
    ]


def users_erase(client: ControlClient, args: argparse.Namespace) -> Output:
    user = user_doc(client, args.user, args.channel)
    confirm = args.confirm
    if confirm is None:
        if not sys.stdin.isatty():
            raise CommandError("say --confirm EMAIL (the user's email) to erase them")
        confirm = input(
            f"Erasing user {user['id']} removes their profile, audit values and outbox from "
            "Kuloo for good; their Sell record stays, unlinked. Type their email to go on: "
        )
    result = client.call("users.erase", {"id": user["id"], "confirm": confirm})
    return result, [
        f"user {result['id']} erased (channel {result['channel']}, at {result['erased_at']}); "
        "the Sell record is not touched: delete it in Sell if it must go too"
    ]


def _run_row(r: dict[str, Any]) -> tuple:
    why = r["reason"] or r["error"] or ""
    if r.get("retry_at"):
        why += f" (retry at {r['retry_at']})"
    return (r["id"], r["status"], r["started_at"], r["finished_at"], _counts(r["counts"]), why)


RUN_HEADERS = ("ID", "STATUS", "STARTED", "FINISHED", "COUNTS", "REASON")


def sync_run(client: ControlClient, args: argparse.Namespace) -> Output:
    run = client.call("sync.run", {"channel": channel_id(client, args.channel)})
    return run, table(RUN_HEADERS, [_run_row(run)])


def sync_runs(client: ControlClient, args: argparse.Namespace) -> Output:
    result = client.call(
        "sync.runs", {"channel": channel_id(client, args.channel), "limit": args.limit}
    )
    return result, table(RUN_HEADERS, [_run_row(r) for r in result["runs"]])


def sync_errors(client: ControlClient, args: argparse.Namespace) -> Output:
    params: dict[str, Any] = {"channel": channel_id(client, args.channel), "limit": args.limit}
    if args.after is not None:
        params["after"] = args.after
    result = client.call("sync.errors", params)
    rows = [(e["id"], e["user"], _crm(e["crm"]), e["email"], e["error"]) for e in result["errors"]]
    if result["next"]:
        _hint(args, f"more: --after {result['next']}")
    return result, table(("ID", "USER", "CRM", "EMAIL", "ERROR"), rows)


def channel_verify(client: ControlClient, args: argparse.Namespace) -> Output:
    doc = client.call("channels.verify", {"id": channel_id(client, args.channel)})
    conn = doc["connection"]
    lines = fields(
        [
            ("id", doc["id"]),
            ("name", doc["name"]),
            ("plan", doc["plan"]),
            ("token", doc["api_token"]),
            ("connection", conn["status"]),
            ("checked", conn["checked_at"]),
        ]
    )
    lines += [f"  - {p}" for p in conn["problems"]]
    if conn["status"] != "verified":
        args.exit_status = 1
        args.failure = (
            f"channel {doc['id']}'s connection is {conn['status']}: "
            f"{len(conn['problems'])} problem(s)"
        )
    return doc, lines


def outbox_row(m: dict[str, Any]) -> tuple[Any, ...]:
    """One message's table row: SENT/NEXT is when it was sent, or its next attempt (a
    failed message has none: it is never retried)."""
    when = m["sent_at"] or (None if m["state"] == OutboxState.FAILED else m["next_attempt_at"])
    return (
        m["id"],
        m["state"],
        m["kind"],
        m["email"],
        m["article"] or m["articles"],
        m["attempts"],
        when,
        m["last_error"] or "",
    )


def outbox_list(client: ControlClient, args: argparse.Namespace) -> Output:
    params: dict[str, Any] = {"channel": channel_id(client, args.channel), "limit": args.limit}
    if args.state is not None:
        params["state"] = args.state
    if args.after is not None:
        params["after"] = args.after
    result = client.call("outbox.list", params)
    rows = [outbox_row(m) for m in result["messages"]]
    if result["next_after"]:
        _hint(args, f"more: --after {result['next_after']}")
    return result, table(
        ("ID", "STATE", "KIND", "EMAIL", "ARTICLE", "TRIES", "SENT/NEXT", "LAST ERROR"), rows
    )


def channel_delete(client: ControlClient, args: argparse.Namespace) -> Output:
    doc = client.call("channels.get", {"id": channel_id(client, args.channel)})
    confirm = args.confirm
    if confirm is None:
        if not sys.stdin.isatty():
            raise CommandError("say --confirm NAME (the channel's exact name) to delete it")
        confirm = input(
            f"Deleting channel {doc['id']} ({doc['name']}) removes all its users, articles, "
            "outbox, sync history and audit log; the Sell records stay. "
            "Type its name to go on: "
        )
    result = client.call("channels.delete", {"id": doc["id"], "confirm": confirm})
    return result, fields(
        [("deleted", f"channel {result['id']} ({result['name']})"), ("users", result["users"])]
    )


# ----------------------------------------------------------------------------- parsers


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return int(text)


def _leaf(
    group: argparse._SubParsersAction,
    name: str,
    handler: Callable[..., Output],
    help_: str,
    common: argparse.ArgumentParser,
    *,
    channel: bool = True,
) -> argparse.ArgumentParser:
    p = group.add_parser(name, help=help_, description=help_, parents=[common])
    p.set_defaults(handler=handler)
    if channel:
        p.add_argument(
            "--channel",
            "-c",
            metavar="ID|NAME",
            help="channel id or name (default: the daemon's only channel)",
        )
    return p


def add_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """The friendly subcommands under ``sub``; ``common`` carries --socket/--config/--json."""
    users = sub.add_parser(
        "users",
        help="list, show, add, erase users; reset a user's sequence; clear a user's bounce",
        description="Users of a channel.",
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _leaf(
        users,
        "list",
        users_list,
        "List a channel's users, one page (users.list): id, email, name, "
        "subscription, source, promo tags, CRM record, sync error, bounce status.",
        common,
    )
    p.add_argument("--query", "-q", help="part of the email or name")
    p.add_argument("--subscription", choices=SUBSCRIPTIONS)
    p.add_argument(
        "--source", choices=SOURCES, help="how they arrived (app: registered in the Kuloo app)"
    )
    p.add_argument("--promo", metavar="TAG", help="users carrying this promo tag")
    p.add_argument(
        "--crm-kind",
        dest="crm_kind",
        choices=CRM_KINDS,
        help="linked to a lead, a contact, or none",
    )
    p.add_argument(
        "--has-sync-error",
        dest="has_sync_error",
        action=argparse.BooleanOptionalAction,
        help="only users with (--no-has-sync-error: without) a sync error",
    )
    p.add_argument(
        "--bounced",
        action=argparse.BooleanOptionalAction,
        help="only users whose address bounced, who get no email until the bounce is "
        "cleared (--no-bounced: only the others)",
    )
    p.add_argument("--limit", type=_positive, default=50, help="page size, 1..500 (default 50)")
    p.add_argument(
        "--after", type=int, metavar="ID", help="the next page (its id is printed on stderr)"
    )

    p = _leaf(
        users,
        "show",
        users_show,
        "Show one user (users.get) and their sequence progress (users.progress).",
        common,
    )
    p.add_argument("user", metavar="USER", help="user id, or email address (in --channel)")

    p = _leaf(
        users,
        "add",
        users_add,
        "Add a user (users.add, source admin); prints the new user.",
        common,
    )
    p.add_argument("email", metavar="EMAIL")
    p.add_argument("--first-name", dest="first_name")
    p.add_argument("--last-name", dest="last_name")
    p.add_argument(
        "--frequency",
        choices=[f.value for f in Frequency],
        help="digest frequency (default weekly)",
    )
    p.add_argument(
        "--promo", action="append", metavar="TAG", help="a promo tag (repeat for several)"
    )
    p.add_argument(
        "--add-to-crm", dest="add_to_crm", action="store_true", help="push them to Sell as a lead"
    )
    p.add_argument("--unsubscribed", action="store_true", help="add them opted out")

    p = _leaf(
        users,
        "reset",
        users_reset,
        "Reset a user's sequence (users.reset_sequence): the sequence starts "
        "again from its first article. Safe to repeat.",
        common,
    )
    p.add_argument("user", metavar="USER", help="user id, or email address (in --channel)")

    p = _leaf(
        users,
        "clear-bounce",
        users_clear_bounce,
        "Clear a user's bounce (users.update with clear_bounce): Kuloo mails the address "
        "again from now on. Only when you know it works again; the next bounce marks it again.",
        common,
    )
    p.add_argument("user", metavar="USER", help="user id, or email address (in --channel)")

    p = _leaf(
        users,
        "erase",
        users_erase,
        "Erase a user (users.erase): their personal data leaves Kuloo, a "
        "tombstone stays so the sync does not import them again. Asks for the email again unless "
        "--confirm gives it.",
        common,
    )
    p.add_argument("user", metavar="EMAIL", help="the user's email (or id), in --channel")
    p.add_argument("--confirm", metavar="EMAIL", help="the user's email again (the confirmation)")

    sync = sub.add_parser(
        "sync",
        help="run a sync now; the run history; the sync errors",
        description="The channel's two-way sync with Zendesk Sell.",
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    _leaf(
        sync, "run", sync_run, "Run a sync now and print the run when it ends (sync.run).", common
    )
    p = _leaf(sync, "runs", sync_runs, "The sync run history, newest first (sync.runs).", common)
    p.add_argument("--limit", type=_positive, default=20, help="how many runs, 1..100 (default 20)")
    p = _leaf(
        sync,
        "errors",
        sync_errors,
        "The sync errors, oldest first (sync.errors): the user (- for a "
        "CRM record without one), the record, the email and what to do.",
        common,
    )
    p.add_argument("--limit", type=_positive, default=100, help="page size, 1..500 (default 100)")
    p.add_argument(
        "--after", type=_positive, metavar="ID", help="the next page (printed on stderr)"
    )

    channel = sub.add_parser(
        "channel",
        help="verify a channel's Sell connection; delete a channel",
        description="A channel.",
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    _leaf(
        channel,
        "verify",
        channel_verify,
        "Check the channel's Sell token and fields now (channels.verify) and "
        "list every problem; exit status 1 unless the connection is verified.",
        common,
    )
    p = _leaf(
        channel,
        "delete",
        channel_delete,
        "Delete the channel and everything of it (channels.delete): users, "
        "articles, outbox, sync history, audit log. Its Sell records are not touched. Asks for the "
        "channel's name unless --confirm gives it.",
        common,
    )
    p.add_argument("--confirm", metavar="NAME", help="the channel's exact name (the confirmation)")

    outbox = sub.add_parser(
        "outbox", help="list the outbox", description="The channel's outgoing mail."
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    p = _leaf(
        outbox, "list", outbox_list, "List outgoing mail (outbox.list), oldest first.", common
    )
    p.add_argument("--state", choices=OUTBOX_STATES)
    p.add_argument("--limit", type=_positive, default=100, help="page size, 1..1000 (default 100)")
    p.add_argument(
        "--after", type=_positive, metavar="ID", help="the next page (printed on stderr)"
    )
