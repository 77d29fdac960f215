"""The system audit trail now belongs to the audit app (audit 0001 took the table over and
installed its append-only trigger); drop the trigger installed under this app's name and forget
the model here. No table changes."""

import pgtrigger.migrations
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("activation", "0009_bulk_recovery_jobs_with_unreadable_windows"),
        ("audit", "0001_system_trail_from_activation"),
    ]

    operations = [
        pgtrigger.migrations.RemoveTrigger(model_name="systemevent", name="append_only"),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="SystemEvent")],
        ),
    ]
