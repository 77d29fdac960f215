"""The emergency switch: pause core submissions during an outage, resume and drain afterwards."""

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from accounts.roles import can
from audit.services import record_system_event

from ..errors import NotPermitted, ReasonRequired
from ..models import CoreRequest, CoreSubmissionSwitch


def _switch_for_update() -> CoreSubmissionSwitch:
    switch, _created = CoreSubmissionSwitch.objects.select_for_update().get_or_create(pk=1)
    return switch


def core_submissions_paused() -> bool:
    return CoreSubmissionSwitch.objects.filter(pk=1, paused=True).exists()


@transaction.atomic
def set_core_submissions_paused(
    *, paused: bool, actor: User | None, reason: str, ip: str | None = None
) -> CoreSubmissionSwitch:
    """Pause or resume sending to the core; recorded on the audit trail with who and why.

    ``actor`` None is an operator at the command line; a person must hold the permission.
    """
    if actor is not None and not can(actor, "operate_core_switch"):
        raise NotPermitted(_("You are not allowed to pause or resume core submissions."))
    reason = reason.strip()
    if not reason:
        raise ReasonRequired(_("Say why: it goes on the audit trail."))
    switch = _switch_for_update()
    was_paused = switch.paused
    switch.paused = paused
    switch.reason = reason
    switch.changed_by = actor
    switch.changed_at = timezone.now()
    switch.save()
    queued = CoreRequest.objects.filter(status=CoreRequest.Status.PENDING).count()
    record_system_event(
        kind="core_submissions.paused" if paused else "core_submissions.resumed",
        actor=actor,
        ip=ip,
        data={"reason": reason, "was_paused": was_paused, "queued_requests": queued},
    )
    return switch
