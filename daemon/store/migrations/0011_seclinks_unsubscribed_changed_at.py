from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0010_sellsim3_retry_at')]

    initial = False

    operations = [
        ops.AddField(
            model_name='User',
            name='unsubscribed_changed_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
    ]
