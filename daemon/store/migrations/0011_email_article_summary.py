from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0010_seclinks_unsubscribed_changed_at'), ('models', '0010_sellsim3_retry_at')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Article',
            name='summary',
            field=fields.TextField(db_default='', unique=False),
        ),
    ]
