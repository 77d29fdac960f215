from django.db import migrations, models
from django.db.models.functions import Upper

from activation.migrations_helpers import AddIndexConcurrently


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction; the case and credit-line tables
    # take writes all the time, so the indexes are built without locking them.
    atomic = False

    dependencies = [
        ("activation", "0011_case_event_outcome_index"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="activationcase",
            index=models.Index(fields=["sla_due_at", "opened_at", "-id"], name="case_queue_order"),
        ),
        AddIndexConcurrently(
            model_name="activationcase",
            index=models.Index(
                fields=["state", "sla_due_at", "opened_at", "-id"], name="case_queue_by_state"
            ),
        ),
        AddIndexConcurrently(
            model_name="activationcase",
            index=models.Index(
                condition=~models.Q(failure_reason=""),
                fields=["failure_reason", "sla_due_at", "opened_at", "-id"],
                name="case_queue_by_reason",
            ),
        ),
        AddIndexConcurrently(
            model_name="creditline",
            index=models.Index(Upper("reference"), name="credit_line_reference_upper"),
        ),
    ]
