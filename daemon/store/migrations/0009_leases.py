from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0008_foreign_key_indexes')]

    initial = False

    operations = [
        ops.CreateModel(
            name='DaemonRow',
            fields=[
                ('id', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=64)),
                ('host', fields.CharField(max_length=255)),
                ('pid', fields.IntField()),
                ('started_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('heartbeat', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('stopped_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'daemon', 'app': 'models', 'pk_attr': 'id', 'table_description': 'One daemon process seen on this (PostgreSQL) database: ``status`` lists them.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Lease',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('channel', fields.ForeignKeyField('models.Channel', source_field='channel_id', db_constraint=True, to_field='id', related_name='leases', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharField(max_length=16)),
                ('lease_owner', fields.CharField(default='', db_default='', max_length=64)),
                ('lease_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'lease', 'app': 'models', 'unique_together': (('channel', 'kind'),), 'indexes': [Index(fields=['lease_owner'])], 'pk_attr': 'id', 'table_description': "Who holds a channel's sync run or delivery pass (``kind``), until when (database time)."},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='SyncRun',
            name='daemon_id',
            field=fields.CharField(default='', db_default='', max_length=64),
        ),
    ]
