from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import UniqueConstraint

class StateOnlyAlterField(ops.AlterField):
    """An AlterField with no schema change (a Python-side option): nothing to run."""

    async def database_forward(self, *args, **kwargs) -> None:
        return None

    async def database_backward(self, *args, **kwargs) -> None:
        return None


class Migration(migrations.Migration):
    dependencies = [('models', '0003_clock_state_and_states')]

    initial = False

    operations = [
        ops.CreateModel(
            name='UserTag',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', db_constraint=True, to_field='id', related_name='tags', on_delete=OnDelete.CASCADE)),
                ('channel', fields.ForeignKeyField('models.Channel', source_field='channel_id', db_constraint=True, to_field='id', related_name='user_tags', on_delete=OnDelete.CASCADE)),
                ('tag', fields.CharField(max_length=100)),
            ],
            options={'table': 'user_promo_tag', 'app': 'models', 'unique_together': (('user', 'tag'),), 'indexes': [Index(fields=['channel_id', 'tag', 'user_id'])], 'pk_attr': 'id', 'table_description': 'One promo tag of one user: the portable way to filter users by tag (no JSON queries).'},
            bases=['Model'],
        ),
        # JSON -> JSON text: tortoise cannot change a column's type, so the values wait in a
        # side table while the columns are dropped and added again (they were JSON text).
        ops.RunSQL(
            'CREATE TABLE audit_values_0004 AS SELECT id, CAST("old" AS TEXT) AS o, CAST("new" AS TEXT) AS n FROM audit_entry',
            reverse_sql="DROP TABLE IF EXISTS audit_values_0004",
        ),
        ops.RemoveField(model_name='AuditEntry', name='new'),
        ops.AddField(
            model_name='AuditEntry',
            name='new',
            field=fields.TextField(null=True, unique=False),
        ),
        ops.RemoveField(model_name='AuditEntry', name='old'),
        ops.AddField(
            model_name='AuditEntry',
            name='old',
            field=fields.TextField(null=True, unique=False),
        ),
        ops.RunSQL(
            'UPDATE audit_entry SET "old" = (SELECT o FROM audit_values_0004 v WHERE v.id = audit_entry.id),'
            ' "new" = (SELECT n FROM audit_values_0004 v WHERE v.id = audit_entry.id)',
            reverse_sql="SELECT 1",
        ),
        ops.RunSQL("DROP TABLE audit_values_0004", reverse_sql="SELECT 1"),
        ops.AddIndex(
            model_name='AuditEntry',
            index=Index(fields=['user_id', 'id']),
        ),
        # Business times come from the clock (auto_now reads the wall). auto_now is not in
        # the schema, so this changes only tortoise's state: on SQLite a real AlterField
        # rebuilds kuloo_user, and dropping the old table cascades to its users' mail.
        StateOnlyAlterField(
            model_name='User',
            name='updated_at',
            field=fields.DatetimeField(auto_now=False, auto_now_add=True),
        ),
        ops.AddField(
            model_name='User',
            name='changed_at',
            field=fields.JSONField(default=dict, db_default='{}', encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='User',
            name='email_key',
            field=fields.CharField(db_default='', max_length=320),
        ),
        # Users kept before emails were compared case-insensitively get their key.
        ops.RunSQL(
            "UPDATE kuloo_user SET email_key = LOWER(TRIM(email))",
            reverse_sql="UPDATE kuloo_user SET email_key = ''",
        ),
        ops.AddField(
            model_name='User',
            name='revision',
            field=fields.IntField(default=1, db_default=1),
        ),
        ops.AddIndex(
            model_name='User',
            index=Index(fields=['channel_id', 'id']),
        ),
        ops.AddIndex(
            model_name='User',
            index=Index(fields=['channel_id', 'unsubscribed', 'frequency']),
        ),
        ops.AddIndex(
            model_name='User',
            index=Index(fields=['channel_id', 'source']),
        ),
        ops.AddIndex(
            model_name='User',
            index=Index(fields=['channel_id', 'crm_kind', 'crm_id']),
        ),
        ops.AddConstraint(
            model_name='User',
            constraint=UniqueConstraint(fields=('channel', 'email_key'), name=None),
        ),
        ops.AddField(
            model_name='User',
            name='search_text',
            field=fields.CharField(db_default='', max_length=730),
        ),
        ops.RunSQL(
            "UPDATE kuloo_user SET search_text = LOWER(email_key || ' ' || first_name || ' ' || last_name)",
            reverse_sql="UPDATE kuloo_user SET search_text = ''",
        ),
        ops.AddIndex(
            model_name='User',
            index=Index(fields=['channel_id', 'search_text']),
        ),
        ops.AddIndex(
            model_name='User',
            index=Index(fields=['channel_id', 'sync_error']),
        ),
    ]
