from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0007_next_due_at')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='AuditEntry',
            index=Index(fields=['channel_id']),
        ),
        ops.AddIndex(
            model_name='OutboxMessage',
            index=Index(fields=['channel_id', 'state', 'id']),
        ),
        ops.AddIndex(
            model_name='OutboxMessage',
            index=Index(fields=['user_id', 'kind']),
        ),
        ops.AddIndex(
            model_name='OutboxMessage',
            index=Index(fields=['article_id']),
        ),
        ops.AddIndex(
            model_name='SequenceProgress',
            index=Index(fields=['article_id']),
        ),
        ops.AddIndex(
            model_name='SequenceProgress',
            index=Index(fields=['outbox_id']),
        ),
        ops.AddIndex(
            model_name='SyncRun',
            index=Index(fields=['channel_id', 'id']),
        ),
    ]
