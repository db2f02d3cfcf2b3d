from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from tortoise import fields
from tortoise.migrations.constraints import UniqueConstraint

class Migration(migrations.Migration):
    dependencies = [('models', '0004_users')]

    initial = False

    operations = [
        ops.AlterModelOptions(
            name='Article',
            options={'table': 'article', 'app': 'models', 'unique_together': (('channel', 'key'),), 'pk_attr': 'id', 'table_description': 'One article of a channel, as last imported; ``version`` goes up when its content changes.'},
        ),
        ops.AddField(
            model_name='Article',
            name='content_hash',
            field=fields.CharField(db_default='', max_length=64),
        ),
        ops.AddField(
            model_name='Article',
            name='key',
            field=fields.CharField(db_default='', max_length=500),
        ),
        ops.AddField(
            model_name='Article',
            name='source_file',
            field=fields.TextField(db_default='', unique=False),
        ),
        ops.AddField(
            model_name='Article',
            name='withdrawn_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddConstraint(
            model_name='Article',
            constraint=UniqueConstraint(fields=('channel', 'key'), name=None),
        ),
        ops.AlterField(
            model_name='OutboxMessage',
            name='state',
            field=fields.CharField(default='queued', db_index=True, max_length=16),
        ),
        ops.AddField(
            model_name='OutboxMessage',
            name='articles',
            field=fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='OutboxMessage',
            name='attempted_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='OutboxMessage',
            name='next_attempt_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AlterModelOptions(
            name='SequenceProgress',
            options={'table': 'sequence_progress', 'app': 'models', 'unique_together': (('user', 'article'),), 'pk_attr': 'id', 'table_description': 'One sequential article taken for one user: queued (``sent_at`` null) or sent.'},
        ),
        ops.AlterField(
            model_name='SequenceProgress',
            name='sent_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='SequenceProgress',
            name='outbox_id',
            field=fields.IntField(null=True),
        ),
    ]
