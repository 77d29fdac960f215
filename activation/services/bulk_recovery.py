"""Bulk recovery after an outage: a job the supervisor starts and a worker carries out."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from audit.services import record_system_event
from portal.queue import enqueue_on_commit

from ..errors import InvalidWindow
from ..models import ActivationCase, BulkRecoveryJob
from ..timeline import SYSTEM_CONTEXT, RequestContext
from ._common import S, lock_case
from .staff import BULK_RECOVERY_REASONS, _require, _require_reason, _resubmit

# A bulk recovery follows an outage staff know about: a window reaching further back, or into
# the future, is a typo. Bounding it also keeps the stored times where every page can show them
# (a year-1 time in Shanghai is a year-0 time in UTC, which Python cannot read back).
BULK_RECOVERY_MAX_AGE = timedelta(days=90)
# "Until now" typed to the minute, or by someone whose clock runs a little fast, is no typo.
BULK_RECOVERY_CLOCK_SKEW = timedelta(minutes=5)


def check_bulk_recovery_window(*, since: datetime, until: datetime) -> None:
    """Refuse a window that ends before it starts, starts over 90 days ago or ends in the future."""
    now = timezone.now()
    if since >= until:
        raise InvalidWindow(_("The window must end after it starts."))
    if since < now - BULK_RECOVERY_MAX_AGE:
        raise InvalidWindow(
            _("The window must start within the last %(days)d days.")
            % {"days": BULK_RECOVERY_MAX_AGE.days}
        )
    if until > now + BULK_RECOVERY_CLOCK_SKEW:
        raise InvalidWindow(_("The window cannot end in the future."))


def start_bulk_recovery(
    *,
    staff: User,
    since: datetime,
    until: datetime,
    reason: str,
    context: RequestContext = SYSTEM_CONTEXT,
) -> BulkRecoveryJob:
    """After an outage, queue a job that resubmits every case that failed for want of the core.

    The request only records the job and who asked why; a worker does the resubmitting, in
    batches, so the window's size never decides how long a web request takes.
    """
    _require(staff, "bulk_recover")
    reason = _require_reason(reason)
    check_bulk_recovery_window(since=since, until=until)
    with transaction.atomic():
        job = BulkRecoveryJob.objects.create(
            since=since, until=until, reason=reason, requested_by=staff
        )
        record_system_event(
            kind="cases.bulk_recovery_started",
            actor=staff,
            ip=context.ip_address,
            data={
                "job": job.pk,
                "since": since.isoformat(),
                "until": until.isoformat(),
                "reason": reason,
            },
        )
        enqueue_on_commit("activation.tasks.run_bulk_recovery", job.pk)
    return job


def _bulk_candidates(job: BulkRecoveryJob) -> QuerySet[ActivationCase]:
    # Cases that reached review after the job started are not in it: the count taken at the
    # start stays the job's total, and a case resubmitted now and failing again is not retried.
    return ActivationCase.objects.filter(
        state=S.NEEDS_REVIEW,
        failure_reason__in=BULK_RECOVERY_REASONS,
        state_changed_at__gte=job.since,
        state_changed_at__lt=min(job.until, job.started_at),
    )


@transaction.atomic
def recover_case(*, case_id: int, staff: User, reason: str, job_id: int) -> bool:
    """Resubmit one case of a bulk recovery; False if staff have handled it in the meantime."""
    case = lock_case(case_id)
    # Re-checked under the lock: staff may have handled it since the batch was read.
    if case.state != S.NEEDS_REVIEW or case.failure_reason not in BULK_RECOVERY_REASONS:
        return False
    _resubmit(
        case,
        staff=staff,
        data={"reason": reason, "bulk_recovery": True, "bulk_recovery_job": job_id},
        context=SYSTEM_CONTEXT,
    )
    return True


def waiting_bulk_recovery_job_ids(*, older_than_seconds: int = 60) -> list[int]:
    """Jobs still waiting for a worker well after they were queued (the broker lost the task)."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    return list(
        BulkRecoveryJob.objects.filter(
            status=BulkRecoveryJob.Status.QUEUED, created_at__lte=cutoff
        ).values_list("pk", flat=True)
    )


def _claim_bulk_recovery(job_id: int) -> BulkRecoveryJob | None:
    """Start the job (count its cases), or resume it after a lost worker; None if it is over."""
    with transaction.atomic():
        job = BulkRecoveryJob.objects.select_for_update().get(pk=job_id)
        if job.status == BulkRecoveryJob.Status.QUEUED:
            job.status = BulkRecoveryJob.Status.RUNNING
            job.started_at = timezone.now()
            job.total = _bulk_candidates(job).count()
            job.save(update_fields=["status", "started_at", "total"])
        return job if job.status == BulkRecoveryJob.Status.RUNNING else None


def _recover_next_batch(job_id: int, batch_size: int) -> bool:
    """Resubmit the next batch of the job's cases; False once there are none left."""
    with transaction.atomic():
        # The job's row lock makes a redelivered task wait, then go on from the saved cursor, so
        # no case is counted twice.
        job = (
            BulkRecoveryJob.objects.select_for_update()
            .select_related("requested_by")
            .get(pk=job_id)
        )
        if job.status != BulkRecoveryJob.Status.RUNNING:
            return False
        staff = job.requested_by
        _require(staff, "bulk_recover")  # a supervisor who lost the role stops their job
        case_ids = list(
            _bulk_candidates(job)
            .filter(pk__gt=job.last_case_id)
            .order_by("pk")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not case_ids:
            _finish_bulk_recovery(job)
            return False
        for case_id in case_ids:
            if recover_case(case_id=case_id, staff=staff, reason=job.reason, job_id=job.pk):
                job.resubmitted += 1
            else:
                job.skipped += 1
        job.processed += len(case_ids)
        job.last_case_id = case_ids[-1]
        job.save(update_fields=["processed", "resubmitted", "skipped", "last_case_id"])
        return True


def _finish_bulk_recovery(job: BulkRecoveryJob) -> None:
    # Cases staff handled before their batch came never appear in one: they count as skipped.
    job.skipped = job.total - job.resubmitted
    job.processed = job.total
    job.status = BulkRecoveryJob.Status.DONE
    job.finished_at = timezone.now()
    job.save(update_fields=["skipped", "processed", "status", "finished_at"])
    record_system_event(
        kind="cases.bulk_recovered",
        actor=job.requested_by,
        data={
            "job": job.pk,
            "since": job.since.isoformat(),
            "until": job.until.isoformat(),
            "reason": job.reason,
            "candidates": job.total,
            "resubmitted": job.resubmitted,
            "skipped": job.skipped,
        },
    )


def run_bulk_recovery(*, job_id: int, batch_size: int | None = None) -> BulkRecoveryJob:
    """Carry out a queued bulk recovery, one bounded batch (one transaction) at a time."""
    batch_size = batch_size or settings.ACTIVATION_BULK_RECOVERY_BATCH_SIZE
    if _claim_bulk_recovery(job_id) is None:
        return BulkRecoveryJob.objects.get(pk=job_id)
    try:
        while _recover_next_batch(job_id, batch_size):
            pass
    except Exception as error:
        # The failed batch rolled back; what earlier batches did stands and the page says why
        # the job stopped.
        BulkRecoveryJob.objects.filter(pk=job_id).update(
            status=BulkRecoveryJob.Status.FAILED,
            finished_at=timezone.now(),
            error=getattr(error, "message", "") or repr(error)[:1000],
        )
        raise
    return BulkRecoveryJob.objects.get(pk=job_id)
