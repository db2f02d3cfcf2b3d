from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0005_delivery')]

    initial = False

    operations = [
        ops.CreateModel(
            name='SyncError',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('channel', fields.ForeignKeyField('models.Channel', source_field='channel_id', db_constraint=True, to_field='id', related_name='sync_errors', on_delete=OnDelete.CASCADE)),
                ('user', fields.ForeignKeyField('models.User', source_field='user_id', null=True, db_constraint=True, to_field='id', related_name='sync_errors', on_delete=OnDelete.CASCADE)),
                ('crm_kind', fields.CharField(null=True, max_length=16)),
                ('crm_id', fields.BigIntField(null=True)),
                ('email', fields.CharField(default='', max_length=320)),
                ('code', fields.CharField(max_length=32)),
                ('error', fields.TextField(unique=False)),
                ('attempts', fields.IntField(default=1)),
                ('payload_key', fields.CharField(default='', max_length=64)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'sync_error', 'app': 'models', 'indexes': [Index(fields=['channel_id', 'id']), Index(fields=['channel_id', 'crm_kind', 'crm_id']), Index(fields=['user_id'])], 'pk_attr': 'id', 'table_description': 'Why a CRM record or a user does not sync (``sync.errors``), until it does again.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='User',
            name='crm_linked_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='User',
            name='crm_push_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
    ]
