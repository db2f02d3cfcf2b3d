from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise.fields.base import OnDelete
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('models', '0012_email_article_summary')]

    initial = False

    operations = [
        ops.CreateModel(
            name='ErasedUser',
            fields=[
                ('id', fields.IntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('channel', fields.ForeignKeyField('models.Channel', source_field='channel_id', db_constraint=True, to_field='id', related_name='erased_users', on_delete=OnDelete.CASCADE)),
                ('former_id', fields.IntField()),
                ('kuloo_id', fields.CharField(max_length=64)),
                ('email_hash', fields.CharField(max_length=64)),
                ('crm_kind', fields.CharField(null=True, max_length=16)),
                ('crm_id', fields.BigIntField(null=True)),
                ('erased_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'erased_user', 'app': 'models', 'indexes': [Index(fields=['channel_id', 'kuloo_id']), Index(fields=['channel_id', 'email_hash'])], 'pk_attr': 'id', 'table_description': 'The tombstone of an erased user (``users.erase``, docs/operations.md): no personal data.'},
            bases=['Model'],
        ),
    ]
