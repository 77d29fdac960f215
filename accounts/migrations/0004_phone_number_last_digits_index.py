from django.db import migrations, models
from django.db.models.functions import Right

from activation.migrations_helpers import AddIndexConcurrently


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction; customers sign up and sign in
    # all the time, so the index is built without locking the table.
    atomic = False

    dependencies = [
        ("accounts", "0003_password_changed_at"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="user",
            index=models.Index(Right("phone_number", 4), name="user_phone_last_digits"),
        ),
    ]
