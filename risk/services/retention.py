"""Keeping evaluations only as long as a rule or an auditor may need them."""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from ..models import Evaluation

BATCH = 2000


def purge_old_evaluations(*, batch: int = BATCH) -> int:
    """Delete evaluations (and their fired rules) older than ``RISK_EVALUATION_RETENTION_DAYS``.

    Every rule window is shorter (a year at most), and each evaluation's record stays on its
    case's timeline; only the rules page's counts forget what is older. Deleted in batches, one
    transaction each, so a large backlog never holds a long lock. Returns how many went.
    """
    cutoff = timezone.now() - timedelta(days=settings.RISK_EVALUATION_RETENTION_DAYS)
    purged = 0
    while True:
        with transaction.atomic():
            ids = list(
                Evaluation.objects.filter(created_at__lt=cutoff)
                .order_by("created_at")
                .values_list("pk", flat=True)[:batch]
            )
            if not ids:
                return purged
            _total, deleted = Evaluation.objects.filter(pk__in=ids).delete()
        # What this run deleted, not what it picked: a run at the same time may have deleted
        # the same batch first (this one waited for it and found the rows gone).
        purged += deleted.get(Evaluation._meta.label, 0)
