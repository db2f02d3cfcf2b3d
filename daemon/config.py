"""Daemon configuration: one TOML file, validated whole.

Every key is declared once in ``KEYS`` (type, default, meaning); ``load`` collects every
problem with its dotted key name instead of stopping at the first, so
``kuloo-daemon check-config`` can list them all. Secrets never live in the TOML: the
link-signing key and the SMTP password are credential files (systemd ``LoadCredential=``
or ``[credentials] directory``); Sell tokens live in the store.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .secrets import Secret, read_credential


@dataclass(frozen=True)
class Key:
    type: type | tuple[type, ...]
    default: Any
    doc: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None


KEYS: dict[str, Key] = {
    "daemon.state_dir": Key(
        str, "/var/lib/kuloo", "Folder for the database and other state (systemd StateDirectory=)."
    ),
    "daemon.shutdown_grace_seconds": Key(
        (int, float),
        10,
        "On SIGTERM, how long in-flight work may take to finish.",
        minimum=0,
        maximum=300,
    ),
    "daemon.scheduler_tick_seconds": Key(
        (int, float), 5, "How often the scheduler looks for due work.", minimum=0.05, maximum=300
    ),
    "store.database": Key(
        str,
        "",
        "SQLite file; relative paths are under daemon.state_dir (no '..'); never in a system "
        "folder. Default: <state_dir>/kuloo.sqlite3.",
    ),
    "store.url": Key(
        str,
        "",
        "PostgreSQL instead of SQLite (several daemons): postgres://USER@HOST:PORT/DATABASE, or "
        "postgres://USER@/DATABASE?host=/run/postgresql for a Unix socket. "
        "Never with store.database; no password here: it is the store-password credential.",
    ),
    "store.lease_seconds": Key(
        (int, float),
        30,
        "PostgreSQL: how long a daemon's claim on a channel's sync or delivery "
        "lasts unless renewed; a dead daemon's work is taken over after it.",
        minimum=1,
        maximum=3600,
    ),
    "control.socket": Key(
        str,
        "/run/kuloo/control.sock",
        "Path of the control socket (ignored under socket activation).",
    ),
    "control.group": Key(
        str, "", "Group that owns the control socket (the admins); empty = the daemon's group."
    ),
    "control.max_line_bytes": Key(
        int,
        65536,
        "Longest control-protocol line accepted, in bytes.",
        minimum=1024,
        maximum=16 * 1024 * 1024,
    ),
    "log.format": Key(
        str,
        "auto",
        "auto (JSON when stdout is not a terminal), json or console.",
        choices=("auto", "json", "console"),
    ),
    "log.level": Key(
        str, "info", "Lowest level logged.", choices=("debug", "info", "warning", "error")
    ),
    "credentials.directory": Key(
        str, "", "Folder of credential files; empty = $CREDENTIALS_DIRECTORY (systemd)."
    ),
    "credentials.link_signing_key": Key(
        str, "link-signing-key", "File name of the link-signing key in the credentials folder."
    ),
    "credentials.smtp_password": Key(
        str, "smtp-password", "File name of the SMTP password in the credentials folder."
    ),
    "credentials.erasure_key": Key(
        str,
        "erasure-key",
        "File name of the erasure key (the keyed hash of "
        "erased users' emails) in the credentials folder; never rotate it.",
    ),
    "credentials.dkim_ed25519_key": Key(
        str,
        "dkim-ed25519-key",
        "File name of the Ed25519 seed (base64) for [dkim] ed25519_selector.",
    ),
    "credentials.dkim_private_key": Key(
        str, "dkim-private-key", "File name of the DKIM RSA key (PEM, >= 2048 bits) for [dkim]."
    ),
    "credentials.bounces_password": Key(
        str, "bounces-password", "File name of the [bounces] imap_url password."
    ),
    "credentials.store_password": Key(
        str,
        "store-password",
        "File name of the PostgreSQL password ([store] url) in the "
        "credentials folder; absent = no password (peer or trust authentication).",
    ),
    "sell.base_url": Key(
        str, "https://api.getbase.com", "Zendesk Sell API base URL (sellsim's URL in the demo)."
    ),
    "sell.web_url": Key(
        str,
        "https://app.futuresimple.com",
        "The Sell web app: links to Sell records (sellsim's pages in the demo).",
    ),
    "sell.requests_per_second": Key(
        (int, float),
        9,
        "Request budget per Sell token (Sell allows 10/s); "
        "above 10 only for a loopback base_url (sellsim).",
        minimum=0.1,
        maximum=10_000,
    ),
    "sell.timeout_seconds": Key(
        (int, float), 15, "Timeout of one Sell request.", minimum=0.1, maximum=300
    ),
    "sell.max_attempts": Key(
        int, 5, "Attempts per Sell request on 429, 5xx and network errors.", minimum=1, maximum=20
    ),
    "sell.max_response_bytes": Key(
        int,
        16 * 1024 * 1024,
        "Largest Sell response body read, in bytes once decoded; a larger answer (or one with "
        "more than 100 headers) is a protocol error, retried like a 5xx.",
        minimum=1024 * 1024,
        maximum=256 * 1024 * 1024,
    ),
    "sell.verify_timeout_seconds": Key(
        (int, float), 60, "Longest a token and custom-field check may take.", minimum=1, maximum=600
    ),
    "sell.recheck_seconds": Key(
        (int, float),
        300,
        "How soon a check that could not reach Sell is tried again.",
        minimum=1,
        maximum=86400,
    ),
    "sync.scheduled": Key(
        bool,
        True,
        "Sync every verified channel at its plan's cadence; "
        "false leaves syncing to sync.run (maintenance, tests).",
    ),
    "sync.cadence_seconds": Key(
        (int, float),
        0,
        "Tests only: every plan syncs this often instead of its own cadence (0 = the plan's); "
        "refused unless sell.base_url is loopback.",
        minimum=0,
        maximum=86400,
    ),
    "sync.parallel_runs": Key(
        int,
        8,
        "PostgreSQL: most channels one daemon syncs at once; the other daemons take the "
        "rest of what is due.",
        minimum=1,
        maximum=1000,
    ),
    "sync.batch_retries": Key(
        int,
        3,
        "How many runs in a row retry a record whose write Sell refused "
        "before it waits for a change.",
        minimum=1,
        maximum=20,
    ),
    "clock.mode": Key(
        str,
        "wall",
        "Business time: wall (the system clock) or manual "
        "(moved by clock.set/clock.advance; tests, demo).",
        choices=("wall", "manual"),
    ),
    "clock.start": Key(
        str,
        "",
        "Manual mode: the time of a fresh store, ISO 8601 with offset; "
        "empty = the wall time at first start.",
    ),
    "articles.root": Key(
        str,
        "",
        "Folder articles.import may read under; relative paths are beside this file. "
        "Empty = <state_dir>/articles.",
    ),
    "articles.allow_private_urls": Key(
        bool, False, "Let clipping fetch private and loopback addresses (tests and the demo only)."
    ),
    "articles.clip_timeout_seconds": Key(
        (int, float), 15, "Timeout of one clipping fetch.", minimum=0.1, maximum=300
    ),
    "articles.clip_max_bytes": Key(
        int, 2_000_000, "Largest web page clipping reads.", minimum=1024, maximum=50_000_000
    ),
    "delivery.transport": Key(
        str,
        "smtp",
        "How email leaves: smtp, or maildir (the demo, dry runs).",
        choices=("smtp", "maildir"),
    ),
    "delivery.maildir": Key(
        str, "", "Maildir folder for transport = maildir; relative paths are beside this file."
    ),
    "delivery.messages_per_second": Key(
        (int, float), 10, "Most emails sent per second, per channel.", minimum=0.01, maximum=10_000
    ),
    "delivery.batch_size": Key(
        int,
        50,
        "Emails claimed, sent and committed together.",
        minimum=1,
        maximum=10_000,
    ),
    "delivery.max_attempts": Key(
        int,
        5,
        "Attempts before a failing email is left failed for the admin.",
        minimum=1,
        maximum=50,
    ),
    "delivery.retry_seconds": Key(
        (int, float),
        300,
        "First retry delay of a failed email (doubles each attempt).",
        minimum=1,
        maximum=86_400,
    ),
    "delivery.list_unsubscribe_mailto": Key(
        str,
        "",
        "Address for a mailto: List-Unsubscribe beside the one-click URL; empty = none. "
        "Ignored (with a warning) when [bounces] domain is set: the user's own u- address "
        "is used.",
    ),
    "smtp.host": Key(str, "localhost", "SMTP relay host."),
    "smtp.port": Key(int, 587, "SMTP relay port.", minimum=1, maximum=65535),
    "smtp.security": Key(
        str,
        "starttls",
        "starttls, tls (implicit TLS) or none.",
        choices=("starttls", "tls", "none"),
    ),
    "smtp.username": Key(
        str,
        "",
        "SMTP user; empty = no authentication. The password is the smtp-password credential.",
    ),
    "smtp.timeout_seconds": Key(
        (int, float), 30, "Timeout of one SMTP command.", minimum=0.1, maximum=600
    ),
    "retention.sync_runs_days": Key(
        int,
        90,
        "Sync runs older than this are deleted (each channel's newest is kept).",
        minimum=1,
        maximum=36_500,
    ),
    "retention.audit_days": Key(
        int,
        365,
        "Audit entries, bounce events and bounce mailbox digests older than this are deleted.",
        minimum=1,
        maximum=36_500,
    ),
    "retention.outbox_days": Key(
        int,
        90,
        "Sent, failed and cancelled messages older than this are deleted.",
        minimum=30,
        maximum=36_500,
    ),
    "smtp.ca_file": Key(
        str,
        "",
        "CA bundle (PEM) that verifies the relay's certificate, for the relay only; "
        "empty = the system's store. Relative paths are beside this file.",
    ),
    "smtp.helo_name": Key(
        str, "", "The name this host gives in EHLO, e.g. mail.example.com; empty = its own FQDN."
    ),
    "dkim.domain": Key(
        str, "", "Sign every email with DKIM for this domain (d=); empty = the relay signs."
    ),
    "dkim.ed25519_selector": Key(
        str,
        "",
        "A second, Ed25519 signature under this selector "
        "(key: dkim-ed25519-key); empty = RSA only.",
    ),
    "dkim.selector": Key(
        str, "", "DKIM selector (s=): the key is at <selector>._domainkey.<domain>."
    ),
    "bounces.domain": Key(
        str,
        "",
        "Return-path domain (VERP): MAIL FROM becomes b-<token>@<domain> and a mailto: "
        "List-Unsubscribe u-<token>@<domain> is advertised; empty = MAIL FROM is the sender.",
    ),
    "bounces.maildir": Key(
        str,
        "",
        "Maildir the local MTA delivers the bounce domain's mail to (read and emptied); "
        "relative paths are beside this file. Exclusive with imap_url.",
    ),
    "bounces.imap_url": Key(
        str,
        "",
        "imaps://USER@HOST[:PORT]/MAILBOX holding the bounce domain's mail (TLS only; "
        "the password is the bounces-password credential). Exclusive with maildir.",
    ),
    "bounces.ca_file": Key(
        str,
        "",
        "CA bundle (PEM) that verifies the imap_url server's certificate, for that mailbox "
        "only; empty = the system's store. Relative paths are beside this file.",
    ),
    "bounces.poll_seconds": Key(
        (int, float), 60, "How often the bounce mailbox is read.", minimum=1, maximum=86_400
    ),
    "bounces.soft_limit": Key(
        int,
        5,
        "Soft bounces (4.x.x) with no successful delivery between them that count as a hard "
        "bounce (when spread over at least soft_days).",
        minimum=1,
        maximum=1000,
    ),
    "bounces.soft_days": Key(
        (int, float),
        7,
        "The least span, in days, of soft_limit soft bounces that count as a hard bounce.",
        minimum=0,
        maximum=365,
    ),
    "links.public_url": Key(
        str,
        "",
        "Public base URL of the links service in emails, e.g. https://links.example.com; "
        "empty = the bound address.",
    ),
    "links.listen": Key(
        str,
        "127.0.0.1:8080",
        "HOST:PORT the links HTTP service binds ([::1]:PORT for IPv6); "
        "port 0 picks a free one (tests).",
    ),
    "links.allowed_origins": Key(
        list,
        [],
        'Web sites whose signup popup may post to /signup, e.g. ["https://www.example.com"].',
    ),
    "links.trusted_proxies": Key(
        list,
        [],
        "Peer addresses or networks (CIDR) whose X-Forwarded-For names the client, "
        'e.g. ["127.0.0.1"].',
    ),
    "links.rate_per_minute": Key(
        (int, float),
        60,
        "Requests per minute per client address (a POST with a valid token is never throttled).",
        minimum=1,
        maximum=1_000_000,
    ),
    "links.rate_burst": Key(
        int,
        30,
        "Requests a client address may make at once before the per-minute rate applies.",
        minimum=1,
        maximum=1_000_000,
    ),
    "links.max_body_bytes": Key(
        int, 8192, "Largest request body accepted (forms, JSON).", minimum=256, maximum=1_048_576
    ),
    "links.max_header_bytes": Key(
        int,
        8192,
        "Largest request head (request line and headers) accepted.",
        minimum=1024,
        maximum=65_536,
    ),
    "links.confirm_hours": Key(
        (int, float),
        168,
        "How long a signup confirmation link stays valid.",
        minimum=0.1,
        maximum=24 * 365,
    ),
    "links.confirm_resend_minutes": Key(
        (int, float),
        10,
        "Least time between two confirmation emails to one address of one channel.",
        minimum=0,
        maximum=24 * 60,
    ),
    "links.signup_per_hour": Key(
        int,
        20,
        "Confirmation emails one client address may cause per hour (all channels).",
        minimum=1,
        maximum=1_000_000,
    ),
    "links.token_changes_per_hour": Key(
        int,
        10,
        "Changes one link (its user and purpose) may make per hour; more answer 429.",
        minimum=1,
        maximum=1_000_000,
    ),
    "links.max_connections": Key(
        int,
        256,
        "Open links connections; more are closed at once. Needs open files >= it + 512.",
        minimum=1,
        maximum=1_000_000,
    ),
    "links.request_seconds": Key(
        (int, float),
        10,
        "Time a request's head and body may take (from accept or last answer).",
        minimum=0.1,
        maximum=3600,
    ),
    "metrics.listen": Key(
        str,
        "",
        "HOST:PORT serving Prometheus metrics (GET /metrics) and GET /healthz, e.g. "
        "127.0.0.1:9464; empty = off.",
    ),
    "metrics.per_channel": Key(
        bool,
        False,
        "Per-channel series (a channel's id as a label) for sync runs, emails and "
        "the outbox; false keeps the series count independent of the number of channels.",
    ),
}


class ConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Config:
    path: Path | None
    values: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def state_dir(self) -> Path:
        return Path(self.values["daemon.state_dir"])

    @property
    def database_path(self) -> Path:
        db = self.values["store.database"] or "kuloo.sqlite3"
        return self.state_dir / db  # an absolute db path wins over state_dir

    @property
    def articles_root(self) -> Path:
        return self.state_dir / (self.values["articles.root"] or "articles")

    @property
    def maildir_path(self) -> Path:
        return self.state_dir / self.values["delivery.maildir"]

    @property
    def store_url(self) -> StoreUrl | None:
        """The PostgreSQL server (``[store] url``), or None for the SQLite default."""
        return parse_store_url(self.values["store.url"]) if self.values["store.url"] else None

    def store_password(self) -> Secret | None:
        """The store-password credential, or None when there is no such file."""
        try:
            return self.credential("store_password")
        except FileNotFoundError:
            return None

    def erasure_key(self) -> bytes | None:
        """The erasure-key credential's bytes (the keyed hash of erased users' emails), or
        None when there is none (no erasure can have been made with it)."""
        try:
            key = self.credential("erasure_key")
        except FileNotFoundError:
            return None
        return key.reveal().encode("utf-8") if key else None

    def credentials_dir(self) -> str | None:
        return self.values["credentials.directory"] or os.environ.get("CREDENTIALS_DIRECTORY")

    def credential(self, key: str) -> Secret:
        return read_credential(self.values[f"credentials.{key}"], self.credentials_dir())


def _check(name: str, spec: Key, value: Any) -> str | None:
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    if isinstance(value, float) and not math.isfinite(value):  # nan passes every < and >
        return f"{name}: {value!r} is not a finite number"
    if isinstance(value, bool) and bool not in types:
        return f"{name}: expected {_type_name(types)}, got a boolean"
    if not isinstance(value, types):
        return f"{name}: expected {_type_name(types)}, got {type(value).__name__} {value!r}"
    if spec.choices is not None and value not in spec.choices:
        return f"{name}: {value!r} is not one of {', '.join(map(repr, spec.choices))}"
    if spec.minimum is not None and isinstance(value, int | float) and value < spec.minimum:
        return f"{name}: {value!r} is below the minimum {spec.minimum}"
    if spec.maximum is not None and isinstance(value, int | float) and value > spec.maximum:
        return f"{name}: {value!r} is above the maximum {spec.maximum}"
    return None


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "a number", float: "a number", str: "a string", bool: "true or false"}
    return " or ".join(sorted({names.get(t, t.__name__) for t in types}))


def from_mapping(data: dict[str, Any], path: Path | None = None) -> Config:
    """Validate a parsed TOML document; raises ``ConfigError`` listing every problem."""
    problems: list[str] = []
    flat: dict[str, Any] = {}
    for section, body in data.items():
        if not isinstance(body, dict):
            problems.append(f"{section}: expected a [{section}] table")
            continue
        for key, value in body.items():
            flat[f"{section}.{key}"] = value
    values: dict[str, Any] = {}
    for name in flat:
        if name not in KEYS:
            problems.append(f"{name}: unknown key{_did_you_mean(name)}")
    for name, spec in KEYS.items():
        if name in flat:
            problem = _check(name, spec, flat[name])
            if problem:
                problems.append(problem)
                values[name] = spec.default  # keep checking the rest against a sane value
                continue
            values[name] = flat[name]
        else:
            values[name] = spec.default
    if path is not None and not Path(str(values["daemon.state_dir"])).is_absolute():
        values["daemon.state_dir"] = str((path.parent / values["daemon.state_dir"]).resolve())
    if (
        path is not None
        and values["control.socket"]
        and not Path(values["control.socket"]).is_absolute()
    ):
        values["control.socket"] = str((path.parent / values["control.socket"]).resolve())
    if (
        path is not None
        and values["credentials.directory"]
        and not Path(values["credentials.directory"]).is_absolute()
    ):
        values["credentials.directory"] = str(
            (path.parent / values["credentials.directory"]).resolve()
        )
    if not values["control.socket"].strip():
        problems.append(
            "control.socket: must not be empty (a path such as /run/kuloo/control.sock)"
        )
    elif len(os.fsencode(values["control.socket"])) > 107:
        problems.append("control.socket: path is longer than the 107 bytes a Unix socket allows")
    if values["clock.start"]:
        try:
            start = datetime.fromisoformat(values["clock.start"])
        except ValueError:
            start = None
        if start is None or start.tzinfo is None:
            problems.append(
                "clock.start: must be an ISO 8601 time with its offset, e.g. 2026-01-01T09:00:00Z"
            )
    for key in (
        "articles.root",
        "delivery.maildir",
        "smtp.ca_file",
        "bounces.maildir",
        "bounces.ca_file",
    ):
        if path is not None and values[key] and not Path(values[key]).is_absolute():
            values[key] = str((path.parent / values[key]).resolve())
    for key in ("smtp.ca_file", "bounces.ca_file"):
        if values[key] and not os.path.isfile(values[key]):
            problems.append(f"{key}: no such file: {values[key]}")
    if values["smtp.helo_name"] and not re.fullmatch(
        r"[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f.:]{2,45}\]", values["smtp.helo_name"]
    ):
        problems.append(
            "smtp.helo_name: must be a host name (mail.example.com) "
            "or an address literal ([192.0.2.1])"
        )
    if values["links.public_url"] and not str(values["links.public_url"]).startswith(
        ("http://", "https://")
    ):
        problems.append("links.public_url: must start with https:// (or http:// for tests)")
    problems.extend(_links_problems(values))
    if values["metrics.listen"]:
        try:
            parse_listen(values["metrics.listen"])
        except ValueError as exc:
            problems.append(f"metrics.listen: {exc}")
    if values["delivery.transport"] == "maildir" and not values["delivery.maildir"]:
        problems.append('delivery.maildir: required when delivery.transport = "maildir"')
    problem = _database_problem(values["store.database"], values["daemon.state_dir"])
    if problem:
        problems.append(f"store.database: {problem}")
    if values["store.url"]:
        if values["store.database"]:
            problems.append(
                "store.url: PostgreSQL (store.url) and SQLite (store.database) are exclusive; "
                "set one of them"
            )
        try:
            parse_store_url(values["store.url"])
        except ValueError as exc:
            problems.append(f"store.url: {exc}")
    loopback = is_loopback_url(str(values["sell.base_url"]))
    if not str(values["sell.base_url"]).startswith(("http://", "https://")):
        problems.append("sell.base_url: must start with http:// or https://")
    elif str(values["sell.base_url"]).startswith("http://") and not loopback:
        # The channels' Sell tokens ride on every request: never in clear over a network.
        problems.append(
            "sell.base_url: must start with https:// (the Sell token would cross the "
            "network in clear); http:// only for a loopback address (sellsim)"
        )
    if not str(values["sell.web_url"]).startswith(("http://", "https://")):
        problems.append("sell.web_url: must start with http:// or https:// (the Sell web app)")
    problems.extend(_smtp_problems(values))
    problems.extend(_dkim_problems(values))
    problems.extend(_bounces_problems(values))
    if values["sell.requests_per_second"] > 10 and not loopback:
        problems.append(
            "sell.requests_per_second: Sell allows 10 requests per second; more is only "
            "accepted for a loopback sell.base_url (sellsim)"
        )
    if values["sync.cadence_seconds"] and not loopback:
        problems.append(
            "sync.cadence_seconds: only for tests against a loopback sell.base_url (sellsim); "
            "real channels sync at their plan's cadence"
        )
    if problems:
        raise ConfigError(problems)
    return Config(path=path, values=values)


def _smtp_problems(values: dict[str, Any]) -> list[str]:
    """A password sent as AUTH PLAIN without TLS is readable on every network it crosses."""
    if (
        values["smtp.security"] == "none"
        and values["smtp.username"]
        and not is_loopback_host(str(values["smtp.host"]))
    ):
        return [
            f'smtp.security: "none" with smtp.username set would send the SMTP password in '
            f'clear to smtp.host {values["smtp.host"]!r}; use "starttls" or "tls" '
            f'("none" only for a loopback relay)'
        ]
    return []


def _dkim_problems(values: dict[str, Any]) -> list[str]:
    from .rules.signing import is_domain

    domain, selector = str(values["dkim.domain"]), str(values["dkim.selector"])
    if not domain and not selector:
        return []
    if not domain or not selector:
        missing = "dkim.domain" if not domain else "dkim.selector"
        return [f"{missing}: required when the other [dkim] key is set"]
    problems = []
    if not is_domain(domain):
        problems.append(f"dkim.domain: {domain!r} is not a domain name like example.com")
    label = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*"
    if not re.fullmatch(label, selector):
        problems.append(f"dkim.selector: {selector!r} is not a DNS label like kuloo2026")
    second = str(values["dkim.ed25519_selector"])
    if second and (not re.fullmatch(label, second) or second == selector):
        problems.append(
            f"dkim.ed25519_selector: {second!r} must be a DNS label other than dkim.selector"
        )
    return problems


def _bounces_problems(values: dict[str, Any]) -> list[str]:
    """``[bounces]``: a domain (under ``[dkim] domain`` when that is set, for DMARC
    alignment of the return path) and exactly one mailbox to read (docs/delivery.md,
    "Bounces and complaints")."""
    from .rules.signing import is_domain

    domain = str(values["bounces.domain"]).strip().lower()
    maildir, imap_url = values["bounces.maildir"], values["bounces.imap_url"]
    if not domain:
        if maildir or imap_url:
            which = "bounces.maildir" if maildir else "bounces.imap_url"
            return [f"{which}: needs bounces.domain (the return path the bounces come back to)"]
        return []
    problems = []
    if not is_domain(domain):
        problems.append(f"bounces.domain: {domain!r} is not a domain name like bounces.example.com")
    dkim_domain = str(values["dkim.domain"]).strip().lower()
    if dkim_domain and domain != dkim_domain and not domain.endswith("." + dkim_domain):
        problems.append(
            f"bounces.domain: {domain!r} must be dkim.domain or under it ({dkim_domain!r}), "
            "or the return path is not aligned (DMARC)"
        )
    if bool(maildir) == bool(imap_url):
        problems.append(
            "bounces.domain: needs exactly one of bounces.maildir and bounces.imap_url "
            "(where the bounces arrive)"
        )
    if imap_url:
        try:
            parse_imap_url(str(imap_url))
        except ValueError as exc:
            problems.append(f"bounces.imap_url: {exc}")
    return problems


@dataclass(frozen=True)
class ImapUrl:
    user: str
    host: str
    port: int
    mailbox: str


def parse_imap_url(url: str) -> ImapUrl:
    """``imaps://USER@HOST[:PORT]/MAILBOX`` (TLS only; no password in the URL)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme != "imaps":
        raise ValueError("must start with imaps:// (IMAP over TLS only)")
    if parts.password is not None:
        raise ValueError("no password in the URL: it is the bounces-password credential")
    if not parts.username or not parts.hostname:
        raise ValueError("must be imaps://USER@HOST[:PORT]/MAILBOX")
    try:
        port = parts.port or 993
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    mailbox = unquote(parts.path.lstrip("/")) or "INBOX"
    return ImapUrl(unquote(parts.username), parts.hostname, port, mailbox)


def dkim_key(config: Config) -> Any:
    """The DKIM key (``rules.signing.DkimKey``) when ``[dkim]`` is set, else None. Raises
    ``DkimKeyError`` or ``FileNotFoundError`` (naming the file, never the key)."""
    if not config["dkim.domain"]:
        return None
    from dataclasses import replace

    from .rules.signing import load_ed25519, load_key

    pem = config.credential("dkim_private_key").reveal()
    key = load_key(pem, config["dkim.domain"], config["dkim.selector"])
    if config["dkim.ed25519_selector"]:
        seed = config.credential("dkim_ed25519_key").reveal()
        key = replace(key, ed25519=load_ed25519(seed, config["dkim.ed25519_selector"]))
    return key


def sending_problems(config: Config) -> list[str]:
    """What check-config and start-up (``run``) refuse beyond ``from_mapping``: settings that
    would send mail nobody should receive (docs/delivery.md, "Settings checked before
    sending"). Kept apart so that a configuration read for other work (migrate, backup,
    tests of other keys) is not refused for them."""
    problems = _public_url_problems(config.values)
    if config["dkim.domain"]:
        from .rules.signing import DkimKeyError

        try:
            dkim_key(config)
        except (DkimKeyError, OSError) as exc:
            which = (
                "dkim_ed25519_key"
                if config["credentials.dkim_ed25519_key"] in str(exc) or "Ed25519" in str(exc)
                else "dkim_private_key"
            )
            problems.append(f"credentials.{which}: the DKIM key does not load: {exc}")
    return problems


def warnings(config: Config) -> list[str]:
    """Settings that are accepted but do not do what they say: check-config prints them and
    start-up logs them (docs/delivery.md, "Bounces and complaints")."""
    found = []
    if config["bounces.domain"] and config["delivery.list_unsubscribe_mailto"]:
        found.append(
            "delivery.list_unsubscribe_mailto: ignored because [bounces] domain is set: each "
            "email's List-Unsubscribe carries the user's own mailto: address at "
            f"{config['bounces.domain']} (u-<token>@), which the bounce mailbox reads"
        )
    return found


def _public_url_problems(values: dict[str, Any]) -> list[str]:
    """Mail that leaves for real must link to an https address (docs/delivery.md, "The
    links service"): an empty public_url would put the bound address (127.0.0.1:8080) in
    every unsubscribe link. Only tests (both smtp.host and sell.base_url loopback) may
    leave it empty or http."""
    if values["delivery.transport"] != "smtp":
        return []
    if str(values["links.public_url"]).startswith("https://"):
        return []
    if is_loopback_host(str(values["smtp.host"])) and is_loopback_url(str(values["sell.base_url"])):
        return []
    return [
        'links.public_url: must be an https:// address when delivery.transport = "smtp" '
        "(it is in every unsubscribe link); empty or http:// only when smtp.host and "
        "sell.base_url are both loopback (tests)"
    ]


def _links_problems(values: dict[str, Any]) -> list[str]:
    """The [links] keys that a type check alone cannot judge."""
    import ipaddress
    from urllib.parse import urlsplit

    problems: list[str] = []
    try:
        parse_listen(values["links.listen"])
    except ValueError as exc:
        problems.append(f"links.listen: {exc}")
    for origin in values["links.allowed_origins"]:
        parts = urlsplit(origin) if isinstance(origin, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.path
            or parts.query
            or parts.fragment
            or origin != origin.strip()
        ):
            problems.append(
                f'links.allowed_origins: {origin!r} is not an origin like "https://www.example.com"'
            )
    for proxy in values["links.trusted_proxies"]:
        try:
            if not isinstance(proxy, str):
                raise TypeError
            ipaddress.ip_network(proxy, strict=False)
        except (TypeError, ValueError):
            problems.append(f"links.trusted_proxies: {proxy!r} is not an IP address or network")
    return problems


@dataclass(frozen=True)
class StoreUrl:
    """Where the PostgreSQL store is: ``host`` is a name, an address or a socket folder."""

    user: str
    host: str
    port: int
    database: str

    def __str__(self) -> str:  # never carries a password: there is none in the URL
        if self.host.startswith("/"):
            return f"postgres://{self.user}@/{self.database}?host={self.host}&port={self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgres://{self.user}@{host}:{self.port}/{self.database}"


def parse_store_url(text: str) -> StoreUrl:
    """``postgres://USER@HOST[:PORT]/DB`` or ``postgres://USER@/DB?host=/socket/folder[&port=N]``.

    ``ValueError`` says what is wrong; a password in the URL is refused (and not echoed)."""
    from urllib.parse import parse_qs, unquote, urlsplit

    if text != text.strip() or any(c.isspace() for c in text):
        raise ValueError("must not contain spaces")
    parts = urlsplit(text)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ValueError(
            "must start with postgres:// (the PostgreSQL store); leave it empty for SQLite"
        )
    if parts.password is not None:
        raise ValueError(
            "must not contain a password: put it in the store-password credential file"
        )
    user = unquote(parts.username or "")
    if not user:
        raise ValueError("must name the user, e.g. postgres://kuloo@db.example.com:5432/kuloo")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ValueError(
            "must name the database after the host, e.g. postgres://kuloo@db.example.com/kuloo"
        )
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError("has a malformed query (only ?host=/socket/folder&port=N)") from None
    unknown = sorted(set(query) - {"host", "port"})
    if unknown or parts.fragment:
        raise ValueError(
            f"only host and port may follow '?', not {', '.join(unknown) or 'a fragment'}"
        )
    socket_dir = query.get("host", [""])[-1]
    # urlsplit's port raises ValueError when not a number or above 65535; 0 is a port,
    # not "none"
    try:
        given = query["port"][-1] if "port" in query else parts.port
        port = 5432 if given is None else int(given)
    except ValueError:
        raise ValueError("port must be a number between 1 and 65535") from None
    if not 1 <= port <= 65535:
        raise ValueError("port must be between 1 and 65535")
    host = unquote(parts.hostname or "")
    if socket_dir:
        if host:
            raise ValueError("names both a host and a socket folder (?host=); use one")
        if not socket_dir.startswith("/"):
            raise ValueError("?host= must be an absolute socket folder, e.g. /run/postgresql")
        host = socket_dir
    elif not host:
        raise ValueError("must name the host, or a socket folder with ?host=/run/postgresql")
    return StoreUrl(user=user, host=host, port=port, database=database)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) as (host, port); ``ValueError`` saying what is wrong."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (port 0 to 65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


# Folders that belong to the system: the database never lives there (a typo such as
# /etc/passwd must not be opened, let alone written).
SYSTEM_FOLDERS = (
    "/etc",
    "/proc",
    "/sys",
    "/dev",
    "/boot",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/usr",
    "/run/systemd",
)


def _database_problem(database: str, state_dir: str) -> str | None:
    """Why ``store.database`` is not a sensible place for the SQLite file, or None.

    Accepted: a plain relative path that stays inside ``daemon.state_dir``, or an absolute
    path outside the system folders. Refused: SQLite's special names (``:memory:``,
    ``file:`` URIs), a path naming a folder, and anything that resolves under a system folder.
    """
    if database.startswith(":") or database.startswith("file:"):
        return f"{database!r} must be a file name, not a special SQLite name"
    if database.endswith("/") or database in (".", ".."):
        return f"{database!r} must be a file name, not a folder"
    if database and not os.path.isabs(database) and ".." in Path(database).parts:
        return f"{database!r} must stay inside daemon.state_dir (no '..')"
    path = Path(state_dir) / (database or "kuloo.sqlite3")
    resolved = os.path.realpath(path)
    for folder in SYSTEM_FOLDERS:
        for candidate in (os.path.normpath(path), resolved):
            if candidate == folder or candidate.startswith(folder + "/"):
                where = (
                    f"{str(path)!r}"
                    if candidate == str(path)
                    else f"{str(path)!r} leads to {candidate!r}"
                )
                return f"{where}, in the system folder {folder}; keep it under daemon.state_dir"
    return None


def is_loopback_url(url: str) -> bool:
    """True for http(s)://127.x.x.x, [::1] or localhost: a simulator on this machine."""
    from urllib.parse import urlsplit

    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    return is_loopback_host(host)


def is_loopback_host(host: str) -> bool:
    """True for 127.x.x.x, ::1 (bracketed or not) or localhost."""
    import ipaddress

    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _did_you_mean(name: str) -> str:
    low = name.lower().replace("-", "_")
    for known in KEYS:
        if known.lower() == low or known.split(".")[-1] == low.split(".")[-1]:
            return f" (did you mean {known!r}?)"
    return ""


def load(path: str | os.PathLike) -> Config:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{p}: cannot read the file ({exc.strerror})"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{p}: not valid TOML ({exc})"]) from None
    return from_mapping(data, p.resolve())
