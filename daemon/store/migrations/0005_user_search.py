from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0004_users')]

    initial = False

    operations = [
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
