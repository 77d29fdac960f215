from django.db import migrations, models

from activation.migrations_helpers import AddIndexConcurrently


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [
        ("activation", "0010_system_trail_moves_to_audit"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="caseevent",
            index=models.Index(
                condition=models.Q(
                    ("kind__in", ["case.opened", "state.changed"]),
                    ("state_after__in", ["activated", "failed", "needs_review", "closed"]),
                ),
                fields=["created_at", "state_after"],
                name="case_event_outcome_at",
            ),
        ),
    ]
