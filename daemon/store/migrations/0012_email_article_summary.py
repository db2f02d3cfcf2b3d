from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('models', '0011_seclinks_unsubscribed_changed_at')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Article',
            name='summary',
            field=fields.TextField(db_default='', unique=False),
        ),
    ]
