from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0006_sync')]

    initial = False

    operations = [
        ops.AddField(
            model_name='User',
            name='next_due_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddIndex(
            model_name='User',
            index=Index(fields=['channel_id', 'next_due_at']),
        ),
    ]
