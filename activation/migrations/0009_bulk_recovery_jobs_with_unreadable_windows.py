"""Stop bulk recoveries stored, before windows were bounded, with times Python cannot read.

A window typed as year 1 in Shanghai was stored as a year-0 (BC) time in UTC, which psycopg
cannot turn into a datetime: the bulk-recovery pages answered 500 for every supervisor, and
the sweep queued such a job again every minute. Each is marked stopped with its window emptied
to when it was asked for; the audit trail keeps the window as it was typed.
"""

from datetime import UTC, datetime

from django.db import migrations
from django.db.models import F, Q
from django.db.models.functions import Now

# The earliest time that reads back into Python whatever the time zone.
READABLE_FROM = datetime(1, 1, 2, tzinfo=UTC)


def stop_jobs_with_unreadable_windows(apps, schema_editor) -> None:
    job_model = apps.get_model("activation", "BulkRecoveryJob")
    job_model.objects.filter(Q(since__lt=READABLE_FROM) | Q(until__lt=READABLE_FROM)).update(
        status="failed",
        since=F("created_at"),
        until=F("created_at"),
        finished_at=Now(),
        error="Stopped: its window lay before year 1, a time the portal cannot read.",
    )


class Migration(migrations.Migration):
    dependencies = [("activation", "0008_sign_in_lockout_role")]

    operations = [
        migrations.RunPython(stop_jobs_with_unreadable_windows, migrations.RunPython.noop),
    ]
