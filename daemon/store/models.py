"""The Kuloo side of the data (docs/architecture.md): tortoise-orm models.

Only ``store/`` imports tortoise. Everything here runs on the asyncio loop thread of
``store.bridge``; trio code reaches it through ``Store.run`` with a whole use case.
Lists (tags, counts, last-synced values) are JSON columns: they are read and written
whole, never queried by element. The words stored in the string columns (plans,
sources, frequencies, states) are defined in ``kuloo_daemon.vocabulary``; this module
only persists them. Business timestamps are written from the clock by the use cases.
"""

from typing import Any

from tortoise import fields
from tortoise.models import Model

from ..vocabulary import ConnectionStatus, Frequency, OutboxState, Plan, Source, SyncRunStatus


class Channel(Model):
    """The channel document."""

    id = fields.IntField(primary_key=True)
    name = fields.CharField(max_length=200, unique=True)
    plan = fields.CharField(max_length=16, default=Plan.FREE.value)
    # The Sell API token. A secret: only ever leaves the store wrapped in ``Secret``.
    sell_token = fields.TextField(null=True)
    add_all_users_to_crm = fields.BooleanField(default=False)
    sequential_tags: fields.JSONField[list[str]]
    sequential_tags = fields.JSONField(default=list)
    sender = fields.CharField(max_length=320, default="")
    postal_address = fields.TextField(default="")
    connection_status = fields.CharField(max_length=32, default=ConnectionStatus.NONE.value)
    connection_problems: fields.JSONField[list[str]]
    connection_problems = fields.JSONField(default=list)
    verified_at = fields.DatetimeField(null=True)
    connection_checked_at = fields.DatetimeField(null=True)
    # Change-feed state handed to crm/ and stored back whole (device UUID, mode, watermarks).
    sync_state: fields.JSONField[dict[str, Any]]
    sync_state = fields.JSONField(default=dict)
    last_sync_at = fields.DatetimeField(null=True)
    sync_status = fields.CharField(max_length=200, default="")
    # The use cases write both from the clock (``channels._save``); auto_now only fills in
    # rows written otherwise. Changing these flags would rebuild the table on SQLite.
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "channel"


class User(Model):
    """The profile document of one subscriber of one channel.

    ``store.users`` is the one writer of these rows' Kuloo-side fields (``apply_changes``
    keeps the audit log, the change times, the revision and the tag rows in step).
    """

    id = fields.IntField(primary_key=True)
    channel: fields.ForeignKeyRelation[Channel]
    channel = fields.ForeignKeyField(
        "models.Channel", related_name="users", on_delete=fields.CASCADE
    )
    channel_id: int
    # Stable and opaque, generated here; Sell's KulooId field and the link tokens carry it.
    kuloo_id = fields.CharField(max_length=64, unique=True)
    email = fields.CharField(max_length=320)  # as the user spelled it (trimmed)
    email_key = fields.CharField(
        max_length=320, db_default=""
    )  # vocabulary.email_key: one per channel
    first_name = fields.CharField(max_length=200, default="")
    last_name = fields.CharField(max_length=200, default="")
    source = fields.CharField(max_length=16, default=Source.APP.value)
    frequency = fields.CharField(max_length=16, default=Frequency.WEEKLY.value)
    unsubscribed = fields.BooleanField(default=False)
    add_to_crm = fields.BooleanField(default=False)
    promo_tags: fields.JSONField[list[str]]
    promo_tags = fields.JSONField(default=list)  # read whole; filtered through UserTag
    promo_started_at = fields.DatetimeField(null=True)
    last_active = fields.DatetimeField(null=True)
    crm_kind = fields.CharField(max_length=16, null=True)  # vocabulary.CrmKind
    crm_id = fields.BigIntField(null=True)
    sync_error = fields.TextField(default="")
    # "email first last", lower-cased: users.list's query is one LIKE per word on one
    # column (a covering index here, a trigram index on PostgreSQL).
    search_text = fields.CharField(max_length=730, db_default="")
    # Last values both sides agreed on, per mapped field: the base of the three-way merge.
    synced_values: fields.JSONField[dict[str, Any]]
    synced_values = fields.JSONField(default=dict)
    # The Kuloo change time of each editable field (field -> ISO time), for the merge.
    changed_at: fields.JSONField[dict[str, str]]
    changed_at = fields.JSONField(default=dict, db_default="{}")
    # When ``unsubscribed`` last changed, by any writer (null: not since creation, or before
    # this column came). A signup confirmation issued before it changes nothing (replay).
    unsubscribed_changed_at = fields.DatetimeField(null=True)
    # +1 on every change: a sync batch applies only over the revision it read.
    revision = fields.IntField(default=1, db_default=1)
    # When the current CRM link was made: plan caps keep the oldest links (sync engine).
    crm_linked_at = fields.DatetimeField(null=True)
    # Set before a lead is POSTed for this user and cleared once it is linked: a user found
    # with it set may already have a lead (a crash, an ambiguous create) — look it up first.
    crm_push_at = fields.DatetimeField(null=True)
    last_digest_at = fields.DatetimeField(null=True)
    # The address bounced for good (``store.bounces``): no email of any kind until the email
    # changes or an admin clears it. "" = not bounced; else the status ("5.1.1", "550").
    bounce_status = fields.CharField(max_length=32, default="", db_default="")
    bounce_reason = fields.TextField(default="", db_default="")
    bounce_at = fields.DatetimeField(null=True)
    # When a bounce was last cleared (an admin's clear_bounce or a new email): bounces and
    # soft bounces about mail sent before it belong to the address that was, not this one.
    bounce_cleared_at = fields.DatetimeField(null=True)
    # When delivery must plan this user next (``store.delivery``): null = now (new, changed,
    # or never planned since this column came); ``store.delivery.NOT_DUE`` = only after a
    # change. A pass reads only the users due, through the (channel_id, next_due_at) index.
    next_due_at = fields.DatetimeField(null=True)
    # Set from the clock by the use cases (auto_now would write the wall's time).
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "kuloo_user"
        # (channel, email) is implied by (channel, email_key); it stays because tortoise
        # cannot drop an inline unique constraint on SQLite.
        unique_together = (("channel", "email"), ("channel", "email_key"))
        # users.list pages by id within a channel, filtered by these; the sync finds users
        # by their CRM record. Index fields name the columns (``channel_id``): SQLite reads
        # an unknown quoted name as a string constant and would index nothing.
        indexes = (
            ("channel_id", "id"),
            ("channel_id", "unsubscribed", "frequency"),
            ("channel_id", "source"),
            ("channel_id", "crm_kind", "crm_id"),
            ("channel_id", "search_text"),
            ("channel_id", "sync_error"),  # has_sync_error is the range sync_error > ''
            ("channel_id", "next_due_at"),  # delivery's due users
            ("channel_id", "bounce_status"),  # users.list {"bounced": true}: bounce_status > ''
        )


class UserTag(Model):
    """One promo tag of one user: the portable way to filter users by tag (no JSON queries).

    Mirrors ``User.promo_tags``, written with it by ``store.users``.
    """

    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyRelation[User]
    user = fields.ForeignKeyField("models.User", related_name="tags", on_delete=fields.CASCADE)
    user_id: int
    channel: fields.ForeignKeyRelation[Channel]
    channel = fields.ForeignKeyField(
        "models.Channel", related_name="user_tags", on_delete=fields.CASCADE
    )
    channel_id: int
    tag = fields.CharField(max_length=100)

    class Meta:
        table = "user_promo_tag"
        unique_together = (("user", "tag"),)
        indexes = (("channel_id", "tag", "user_id"),)


class Article(Model):
    """One article of a channel, as last imported; ``version`` goes up when its content changes."""

    id = fields.IntField(primary_key=True)
    channel: fields.ForeignKeyRelation[Channel]
    channel = fields.ForeignKeyField(
        "models.Channel", related_name="articles", on_delete=fields.CASCADE
    )
    channel_id: int
    # Identity across re-imports: the front-matter ``id``, else the path relative to the root.
    key = fields.CharField(max_length=500, db_default="")
    source_file = fields.TextField(db_default="")
    title = fields.CharField(max_length=500)
    format = fields.CharField(max_length=16, default="markdown")  # markdown | html | clip
    body = fields.TextField(default="")  # Markdown or HTML; for a clip, the clipped HTML
    url = fields.TextField(default="")  # a clip's page
    summary = fields.TextField(db_default="")  # front matter: the inbox preview (preheader)
    tags: fields.JSONField[list[str]]
    tags = fields.JSONField(default=list)  # sequential tags; empty = a newsletter article
    published_at = fields.DatetimeField(null=True)
    delay_seconds = fields.IntField(default=0)
    version = fields.IntField(default=1)
    content_hash = fields.CharField(max_length=64, db_default="")
    withdrawn_at = fields.DatetimeField(null=True)  # its file disappeared: never sent again
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "article"
        unique_together = (("channel", "key"),)


class SequenceProgress(Model):
    """One sequential article taken for one user: queued (``sent_at`` null) or sent.

    A Reset deletes a user's rows; what was sent stays in the outbox.
    """

    id = fields.IntField(primary_key=True)
    user: fields.ForeignKeyRelation[User]
    user = fields.ForeignKeyField("models.User", related_name="progress", on_delete=fields.CASCADE)
    user_id: int
    article: fields.ForeignKeyRelation[Article]
    article = fields.ForeignKeyField(
        "models.Article", related_name="progress", on_delete=fields.CASCADE
    )
    article_id: int
    outbox_id = fields.IntField(null=True)
    sent_at = fields.DatetimeField(null=True)

    class Meta:
        table = "sequence_progress"
        unique_together = (("user", "article"),)
        # Foreign keys get no index of their own (tortoise), and PostgreSQL scans a whole
        # table for each cascade or lookup without one.
        indexes = (("article_id",), ("outbox_id",))


class OutboxMessage(Model):
    """Every email to send, in one of the ``vocabulary.OutboxState``s."""

    id = fields.IntField(primary_key=True)
    channel: fields.ForeignKeyRelation[Channel]
    channel = fields.ForeignKeyField(
        "models.Channel", related_name="outbox", on_delete=fields.CASCADE
    )
    channel_id: int
    user: fields.ForeignKeyRelation[User]
    user = fields.ForeignKeyField("models.User", related_name="outbox", on_delete=fields.CASCADE)
    user_id: int
    article: fields.ForeignKeyNullableRelation[Article]
    article = fields.ForeignKeyField(
        "models.Article", related_name="outbox", null=True, on_delete=fields.SET_NULL
    )
    article_id: int | None
    articles: fields.JSONField[list[int] | None]
    articles = fields.JSONField(null=True)  # a digest's article ids
    kind = fields.CharField(max_length=16)  # sequence | digest
    state = fields.CharField(max_length=16, default=OutboxState.QUEUED.value, db_index=True)
    message_id = fields.CharField(max_length=320, unique=True)
    attempts = fields.IntField(default=0)
    last_error = fields.TextField(default="")
    next_attempt_at = fields.DatetimeField(null=True)
    attempted_at = fields.DatetimeField(null=True)  # when it was last handed to the transport
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    sent_at = fields.DatetimeField(null=True)

    class Meta:
        table = "outbox_message"
        # The delivery pass claims a channel's queued mail in id order; outbox.list pages it
        # by state; cancelling finds a user's (or an article's) mail.
        indexes = (("channel_id", "state", "id"), ("user_id", "kind"), ("article_id",))


class SyncRun(Model):
    id = fields.IntField(primary_key=True)
    channel: fields.ForeignKeyRelation[Channel]
    channel = fields.ForeignKeyField(
        "models.Channel", related_name="sync_runs", on_delete=fields.CASCADE
    )
    channel_id: int
    started_at = fields.DatetimeField()
    finished_at = fields.DatetimeField(null=True)
    status = fields.CharField(max_length=32, default=SyncRunStatus.RUNNING.value)
    counts: fields.JSONField[dict[str, int]]
    counts = fields.JSONField(default=dict)
    error = fields.TextField(default="")
    # Why it ended as it did, as a word (``vocabulary.INTERRUPTED``); ``error`` is the prose.
    reason = fields.CharField(max_length=32, default="", db_default="")
    # The daemon that ran it (PostgreSQL, several daemons: ``store.leases``); "" on SQLite.
    daemon_id = fields.CharField(max_length=64, default="", db_default="")
    # A run Sell rate-limited (reason ``rate_limited``): the business time from which Sell
    # takes requests again (the next whole hour); a run before then probes once first.
    retry_at = fields.DatetimeField(null=True)

    class Meta:
        table = "sync_run"
        indexes = (
            ("channel_id", "id"),
        )  # a channel's runs, newest first (sync.runs, the scheduler)


class SyncError(Model):
    """Why a CRM record or a user does not sync (``sync.errors``), until it does again.

    One row per user with an error, or per CRM record that has no user (a duplicate email,
    a plan cap). ``code`` says which rule (``sync.texts``), ``payload_key`` which write Sell
    refused, so a record is retried only ``sync.batch_retries`` times until it changes.
    """

    id = fields.IntField(primary_key=True)
    channel: fields.ForeignKeyRelation[Channel]
    channel = fields.ForeignKeyField(
        "models.Channel", related_name="sync_errors", on_delete=fields.CASCADE
    )
    channel_id: int
    user: fields.ForeignKeyNullableRelation[User]
    user = fields.ForeignKeyField(
        "models.User", related_name="sync_errors", null=True, on_delete=fields.CASCADE
    )
    user_id: int | None
    crm_kind = fields.CharField(max_length=16, null=True)
    crm_id = fields.BigIntField(null=True)
    email = fields.CharField(max_length=320, default="")
    code = fields.CharField(max_length=32)
    error = fields.TextField()
    attempts = fields.IntField(default=1)
    payload_key = fields.CharField(max_length=64, default="")
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()

    class Meta:
        table = "sync_error"
        indexes = (("channel_id", "id"), ("channel_id", "crm_kind", "crm_id"), ("user_id",))


class AuditEntry(Model):
    """One change applied to a user by sync, an admin or a link, with who won a conflict."""

    id = fields.IntField(primary_key=True)
    channel: fields.ForeignKeyRelation[Channel]
    channel = fields.ForeignKeyField(
        "models.Channel", related_name="audit", on_delete=fields.CASCADE
    )
    channel_id: int
    user: fields.ForeignKeyNullableRelation[User]
    user = fields.ForeignKeyField(
        "models.User", related_name="audit", null=True, on_delete=fields.SET_NULL
    )
    user_id: int | None
    at = fields.DatetimeField(auto_now_add=True)
    actor = fields.CharField(max_length=16)  # vocabulary.Actor: sync, admin, link, app, …
    field = fields.CharField(max_length=64, default="")
    # The values as JSON text, encoded by ``store.users.audit_entry``: a JSONField takes a
    # Python str for JSON text, so it cannot hold a plain string value.
    old = fields.TextField(null=True)
    new = fields.TextField(null=True)
    note = fields.TextField(default="")

    class Meta:
        table = "audit_entry"
        indexes = (
            ("user_id", "id"),
            ("channel_id",),
        )  # users.audit: a user's entries, newest first


class BounceEvent(Model):
    """One bounce, complaint or mailto unsubscribe heard for a user (``store.bounces``): the
    soft-bounce rule and the channel's deliverability figures count these. Deleted with the
    user (an erasure)."""

    id = fields.IntField(primary_key=True)
    channel: fields.ForeignKeyRelation[Channel]
    channel = fields.ForeignKeyField(
        "models.Channel", related_name="bounce_events", on_delete=fields.CASCADE
    )
    channel_id: int
    user: fields.ForeignKeyNullableRelation[User]
    user = fields.ForeignKeyField(
        "models.User", related_name="bounce_events", null=True, on_delete=fields.CASCADE
    )
    user_id: int | None
    outbox_id = fields.IntField(null=True)  # the message it names (a VERP token), if any
    kind = fields.CharField(max_length=16)  # rules.bounces.Kind
    status = fields.CharField(max_length=32, default="")
    reason = fields.TextField(default="")
    at = fields.DatetimeField()

    class Meta:
        table = "bounce_event"
        indexes = (("channel_id", "at"), ("user_id", "at"))


class InboundMessage(Model):
    """A message read from the bounce mailbox, by the SHA-256 of its bytes: recorded in the
    transaction of its effects, so a message read again after a crash has no second effect."""

    id = fields.IntField(primary_key=True)
    digest = fields.CharField(max_length=64, unique=True)
    kind = fields.CharField(max_length=16)  # rules.bounces.Kind, or "duplicate"
    at = fields.DatetimeField()

    class Meta:
        table = "inbound_message"
        indexes = (("at",),)


class ErasedUser(Model):
    """The tombstone of an erased user (``users.erase``, docs/operations.md): no personal data.

    The former id and KulooId, a keyed hash of the email (HMAC-SHA256 of its
    ``vocabulary.email_key`` under the ``erasure-key`` credential), the Sell record it was
    linked to and when. While it stands, the sync imports no Sell record that carries that
    KulooId or email (docs/sync-rules.md); a new user with that email ends it."""

    id = fields.IntField(primary_key=True)
    channel: fields.ForeignKeyRelation[Channel]
    channel = fields.ForeignKeyField(
        "models.Channel", related_name="erased_users", on_delete=fields.CASCADE
    )
    channel_id: int
    former_id = fields.IntField()
    kuloo_id = fields.CharField(max_length=64)
    email_hash = fields.CharField(max_length=64)
    crm_kind = fields.CharField(max_length=16, null=True)
    crm_id = fields.BigIntField(null=True)
    erased_at = fields.DatetimeField()

    class Meta:
        table = "erased_user"
        indexes = (("channel_id", "kuloo_id"), ("channel_id", "email_hash"))


class ClockState(Model):
    """The manual clock's time (``[clock] mode = "manual"``): one row, so it survives restarts."""

    id = fields.IntField(primary_key=True)
    now = fields.DatetimeField()

    class Meta:
        table = "clock_state"


class DaemonRow(Model):
    """One daemon process seen on this (PostgreSQL) database: ``status`` lists them.

    ``heartbeat`` is the database's time of its last sign of life (``store.leases``)."""

    id = fields.CharField(max_length=64, primary_key=True)
    host = fields.CharField(max_length=255)
    pid = fields.IntField()
    started_at = fields.DatetimeField()
    heartbeat = fields.DatetimeField()
    stopped_at = fields.DatetimeField(null=True)

    class Meta:
        table = "daemon"


class Lease(Model):
    """Who holds a channel's sync run or delivery pass (``kind``), until when (database time).

    PostgreSQL only: claimed with ``SELECT … FOR UPDATE SKIP LOCKED`` (``store.leases``);
    ``lease_owner`` "" is free, and a ``lease_until`` in the past may be taken over."""

    id = fields.IntField(primary_key=True)
    channel: fields.ForeignKeyRelation[Channel]
    channel = fields.ForeignKeyField(
        "models.Channel", related_name="leases", on_delete=fields.CASCADE
    )
    channel_id: int
    kind = fields.CharField(max_length=16)  # sync | delivery
    lease_owner = fields.CharField(max_length=64, default="", db_default="")
    lease_until = fields.DatetimeField(null=True)

    class Meta:
        table = "lease"
        unique_together = (("channel", "kind"),)
        indexes = (("lease_owner",),)
