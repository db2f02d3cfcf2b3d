"""The Kuloo side of the data (DESIGN.md §2): tortoise-orm models.

Only ``store/`` imports tortoise. Everything here runs on the asyncio loop thread of
``store.bridge``; trio code reaches it through ``Store.run`` with a whole use case.
Lists (tags, counts, last-synced values) are JSON columns: they are read and written
whole, never queried by element. The words stored in the string columns (plans,
sources, frequencies, states) are defined in ``kuloo_daemon.vocabulary``; this module
only persists them. Business timestamps are written from the clock by the use cases.
"""

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
    sequential_tags = fields.JSONField(default=list)
    sender = fields.CharField(max_length=320, default="")
    postal_address = fields.TextField(default="")
    connection_status = fields.CharField(max_length=32, default=ConnectionStatus.NONE.value)
    connection_problems = fields.JSONField(default=list)
    verified_at = fields.DatetimeField(null=True)
    connection_checked_at = fields.DatetimeField(null=True)
    # Change-feed state handed to crm/ and stored back whole (device UUID, mode, watermarks).
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
    """The profile document of one subscriber of one channel."""

    id = fields.IntField(primary_key=True)
    channel = fields.ForeignKeyField("models.Channel", related_name="users", on_delete=fields.CASCADE)
    kuloo_id = fields.CharField(max_length=64, unique=True)
    email = fields.CharField(max_length=320)
    first_name = fields.CharField(max_length=200, default="")
    last_name = fields.CharField(max_length=200, default="")
    source = fields.CharField(max_length=16, default=Source.APP.value)
    frequency = fields.CharField(max_length=16, default=Frequency.WEEKLY.value)
    unsubscribed = fields.BooleanField(default=False)
    add_to_crm = fields.BooleanField(default=False)
    promo_tags = fields.JSONField(default=list)
    promo_started_at = fields.DatetimeField(null=True)
    last_active = fields.DatetimeField(null=True)
    crm_kind = fields.CharField(max_length=16, null=True)  # vocabulary.CrmKind
    crm_id = fields.BigIntField(null=True)
    sync_error = fields.TextField(default="")
    # Last values both sides agreed on, per mapped field: the base of the three-way merge.
    synced_values = fields.JSONField(default=dict)
    last_digest_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "kuloo_user"
        unique_together = (("channel", "email"),)


class Article(Model):
    id = fields.IntField(primary_key=True)
    channel = fields.ForeignKeyField("models.Channel", related_name="articles", on_delete=fields.CASCADE)
    title = fields.CharField(max_length=500)
    format = fields.CharField(max_length=16, default="markdown")  # markdown | html | clip
    body = fields.TextField(default="")
    url = fields.TextField(default="")
    tags = fields.JSONField(default=list)  # sequential tags; empty = a newsletter article
    published_at = fields.DatetimeField(null=True)
    delay_seconds = fields.IntField(default=0)
    version = fields.IntField(default=1)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "article"


class SequenceProgress(Model):
    """One sequential article sent to one user."""

    id = fields.IntField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="progress", on_delete=fields.CASCADE)
    article = fields.ForeignKeyField("models.Article", related_name="progress", on_delete=fields.CASCADE)
    sent_at = fields.DatetimeField()

    class Meta:
        table = "sequence_progress"
        unique_together = (("user", "article"),)


class OutboxMessage(Model):
    """Every email to send, in one of the ``vocabulary.OutboxState``s."""

    id = fields.IntField(primary_key=True)
    channel = fields.ForeignKeyField("models.Channel", related_name="outbox", on_delete=fields.CASCADE)
    user = fields.ForeignKeyField("models.User", related_name="outbox", on_delete=fields.CASCADE)
    article = fields.ForeignKeyField("models.Article", related_name="outbox", null=True, on_delete=fields.SET_NULL)
    kind = fields.CharField(max_length=16)  # sequence | digest
    state = fields.CharField(max_length=16, default=OutboxState.QUEUED.value)
    message_id = fields.CharField(max_length=320, unique=True)
    attempts = fields.IntField(default=0)
    last_error = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    sent_at = fields.DatetimeField(null=True)

    class Meta:
        table = "outbox_message"


class SyncRun(Model):
    id = fields.IntField(primary_key=True)
    channel = fields.ForeignKeyField("models.Channel", related_name="sync_runs", on_delete=fields.CASCADE)
    started_at = fields.DatetimeField()
    finished_at = fields.DatetimeField(null=True)
    status = fields.CharField(max_length=32, default=SyncRunStatus.RUNNING.value)
    counts = fields.JSONField(default=dict)
    error = fields.TextField(default="")
    # Why it ended as it did, as a word (``vocabulary.INTERRUPTED``); ``error`` is the prose.
    reason = fields.CharField(max_length=32, default="", db_default="")

    class Meta:
        table = "sync_run"


class AuditEntry(Model):
    """One change applied to a user by sync, an admin or a link, with who won a conflict."""

    id = fields.IntField(primary_key=True)
    channel = fields.ForeignKeyField("models.Channel", related_name="audit", on_delete=fields.CASCADE)
    user = fields.ForeignKeyField("models.User", related_name="audit", null=True, on_delete=fields.SET_NULL)
    at = fields.DatetimeField(auto_now_add=True)
    actor = fields.CharField(max_length=16)  # sync | admin | link | app
    field = fields.CharField(max_length=64, default="")
    old = fields.JSONField(null=True)
    new = fields.JSONField(null=True)
    note = fields.TextField(default="")

    class Meta:
        table = "audit_entry"


class ClockState(Model):
    """The manual clock's time (``[clock] mode = "manual"``): one row, so it survives restarts."""

    id = fields.IntField(primary_key=True)
    now = fields.DatetimeField()

    class Meta:
        table = "clock_state"
