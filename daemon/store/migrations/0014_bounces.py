from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0013_erasure_erased_user')]

    initial = False

    operations = [
        ops.CreateModel(
            name='BounceEvent',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('channel', fields.ForeignKeyField('models.Channel', source_field='channel_id', db_constraint=True, to_field='id', related_name='bounce_events', on_delete=OnDelete.CASCADE)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', null=True, db_constraint=True, to_field='id', related_name='bounce_events', on_delete=OnDelete.CASCADE)),
                ('outbox_id', fields.IntField(null=True)),
                ('kind', fields.CharField(max_length=16)),
                ('status', fields.CharField(default='', max_length=32)),
                ('reason', fields.TextField(default='', unique=False)),
                ('at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'bounce_event', 'app': 'models', 'indexes': [Index(fields=['channel_id', 'at']), Index(fields=['user_id', 'at'])], 'pk_attr': 'id', 'table_description': 'One bounce, complaint or mailto unsubscribe heard for a user (``store.bounces``): the'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='InboundMessage',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('digest', fields.CharField(unique=True, max_length=64)),
                ('kind', fields.CharField(max_length=16)),
                ('at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'inbound_message', 'app': 'models', 'indexes': [Index(fields=['at'])], 'pk_attr': 'id', 'table_description': 'A message read from the bounce mailbox, by the SHA-256 of its bytes: recorded in the'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='User',
            name='bounce_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='User',
            name='bounce_reason',
            field=fields.TextField(default='', db_default='', unique=False),
        ),
        ops.AddField(
            model_name='User',
            name='bounce_status',
            field=fields.CharField(default='', db_default='', max_length=32),
        ),
        ops.AddIndex(
            model_name='User',
            index=Index(fields=['channel_id', 'bounce_status']),
        ),
    ]
