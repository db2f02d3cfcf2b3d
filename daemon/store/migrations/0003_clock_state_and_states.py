from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0002_connection_checked_at')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ClockState',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('now', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'clock_state', 'app': 'models', 'pk_attr': 'id', 'table_description': 'The manual clock\'s time (``[clock] mode = "manual"``): one row, so it survives restarts.'},
            bases=['Model'],
        ),
        ops.AlterModelOptions(
            name='OutboxMessage',
            options={'table': 'outbox_message', 'app': 'models', 'pk_attr': 'id', 'table_description': 'Every email to send, in one of the ``vocabulary.OutboxState``s.'},
        ),
        ops.AddField(
            model_name='SyncRun',
            name='reason',
            field=fields.CharField(default='', db_default='', max_length=32),
        ),
        # The outbox's first state is `queued` (was `pending`): docs/delivery.md, "Outbox states".
        ops.RunSQL(
            "UPDATE outbox_message SET state = 'queued' WHERE state = 'pending'",
            reverse_sql="UPDATE outbox_message SET state = 'pending' WHERE state = 'queued'",
        ),
    ]
