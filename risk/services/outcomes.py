"""Staff's conclusion about a case the checkpoint flagged: confirmed fraud, or a false alarm.

The outcome goes on the case's timeline, counts on the rules page (how often each rule was
right), and, with fraud confirmed, may propose blocking the case's devices and the customer's
phone number; those proposals still need a second person (``risk.services.lists``).
"""

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q
from django.utils.translation import gettext as _

from accounts.models import User
from accounts.roles import can
from activation.models import ActorType
from activation.services._common import lock_case
from activation.timeline import SYSTEM_CONTEXT, RequestContext, append_case_event
from portal.errors import DomainError, NotPermitted, ReasonRequired

from ..models import CaseOutcome, ListEntry
from ..selectors.cases import case_device_keys, checkpoint_flagged
from ..signals import pseudonym
from .lists import propose_block_entry

PERMISSION = "record_risk_outcome"
# A case's devices proposed for blocking, newest first; a fraudster who clears cookies at
# every try must not turn one outcome into hundreds of proposals.
DEVICES_PROPOSED = 10
NOTE_MAX_LENGTH = CaseOutcome._meta.get_field("note").max_length


class OutcomeNotAllowed(DomainError):
    code = "outcome_not_allowed"
    http_status = 409


@dataclass(frozen=True)
class RecordedOutcome:
    outcome: CaseOutcome
    proposed: tuple[ListEntry, ...]  # block proposals waiting for a second person
    already_listed: tuple[str, ...]  # kinds ("device", "phone") already blocked or proposed


def _already_open(wanted: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of the ``(kind, value)`` pairs are already blocked or waiting for approval."""
    if not wanted:
        return set()
    matches = Q()
    for kind, value in wanted:
        matches |= Q(kind=kind, value=value)
    return set(
        ListEntry.objects.filter(
            matches, status__in=[ListEntry.Status.PROPOSED, ListEntry.Status.ACTIVE]
        ).values_list("kind", "value")
    )


@transaction.atomic
def record_outcome(
    *,
    actor: User,
    case_id: int,
    outcome: str,
    note: str,
    block_device: bool = False,
    block_phone: bool = False,
    context: RequestContext = SYSTEM_CONTEXT,
) -> RecordedOutcome:
    """Record confirmed fraud or a false alarm on a flagged case, once; fraud may propose blocks.

    A second outcome for the same case is refused rather than replacing the first: the rules
    page counts outcomes, and a changed verdict would silently rewrite those statistics.
    """
    if not can(actor, PERMISSION):
        raise NotPermitted(_("You are not allowed to record risk outcomes."), permission=PERMISSION)
    if outcome not in CaseOutcome.Outcome.values:
        raise OutcomeNotAllowed(_("Choose confirmed fraud or legitimate."))
    note = (note or "").strip()
    if not note:
        raise ReasonRequired(_("Say what you found: it goes on the case's timeline."))
    # PostgreSQL cannot store a NUL character in text; the form refuses it too.
    if len(note) > NOTE_MAX_LENGTH or "\x00" in note:
        raise OutcomeNotAllowed(
            _("Keep the note to %(limit)s characters of plain text.") % {"limit": NOTE_MAX_LENGTH}
        )
    fraud = outcome == CaseOutcome.Outcome.FRAUD
    if (block_device or block_phone) and not fraud:
        raise OutcomeNotAllowed(_("Only confirmed fraud can add to the block lists."))
    # The case's row lock makes two people recording at once take turns; the second is refused.
    case = lock_case(case_id)
    earlier = CaseOutcome.objects.select_related("recorded_by").filter(case=case).first()
    if earlier is not None:
        raise OutcomeNotAllowed(
            _("An outcome was already recorded for this case, by %(who)s.")
            % {"who": earlier.recorded_by.get_username()}
        )
    if not checkpoint_flagged(case):
        raise OutcomeNotAllowed(
            _("The risk checkpoint did not flag this case; there is no outcome to record.")
        )
    recorded = CaseOutcome.objects.create(case=case, outcome=outcome, note=note, recorded_by=actor)
    reason = _("Confirmed fraud on case %(case)s: %(note)s") % {"case": case.pk, "note": note}
    reason = reason[: ListEntry._meta.get_field("reason").max_length]
    wanted: list[tuple[str, str]] = []
    if block_device:
        wanted += [(ListEntry.Kind.DEVICE, key) for key in case_device_keys(case, DEVICES_PROPOSED)]
    if block_phone and case.credit_line.customer.phone_number:
        wanted.append((ListEntry.Kind.PHONE, str(case.credit_line.customer.phone_number)))
    listed = _already_open(wanted)
    proposed, already = [], []
    for kind, value in wanted:
        if (kind, value) in listed:
            already.append(kind)
            continue
        proposed.append(
            propose_block_entry(
                actor=actor,
                kind=kind,
                value=value,
                reason=reason,
                case=case,
                ip=context.ip_address,
            )
        )
    append_case_event(
        case,
        kind="risk.outcome_recorded",
        actor_type=ActorType.STAFF,
        actor=actor,
        data={
            "outcome": outcome,
            "note": note,
            # Identifying values stay off the timeline: the entries name them.
            "block_proposals": [
                {
                    "entry": entry.pk,
                    "list": entry.kind,
                    **({"device": pseudonym(entry.value)} if entry.kind == "device" else {}),
                }
                for entry in proposed
            ],
            "already_listed": already,
        },
        context=context,
    )
    return RecordedOutcome(
        outcome=recorded, proposed=tuple(proposed), already_listed=tuple(already)
    )
