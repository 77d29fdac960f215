"""The staff actions on one case, shared by the back office's case page and the staff API.

Both parse their own input and call ``run_case_action``; the services it calls check the role
rules and four eyes, and put each action on the case's timeline as the person who took it.
"""

from typing import Any

from django.http import Http404
from django.utils.translation import gettext as _

from accounts.models import User
from accounts.roles import can

from .errors import NotPermitted
from .models import OverrideRequest
from .services import staff as actions
from .timeline import RequestContext

# Each action and the permission it needs (the pages check it before showing the action).
CASE_ACTIONS = {
    "assign_me": "work_case",
    "unassign": "work_case",
    "note": "work_case",
    "resubmit": "work_case",
    "return": "work_case",
    "close": "work_case",
    "request_override": "request_override",
    "approve_override": "approve_override",
    "reject_override": "approve_override",
}


def run_case_action(
    action: str, *, staff: User, case_id: int, context: RequestContext, data: dict[str, Any]
) -> str:
    """Call the service for ``action`` with the cleaned ``data``; return what to tell the person.

    Raise ``Http404`` for an unknown action or an override that is not this case's, and the
    services' ``DomainError`` for anything they refuse.
    """
    if action not in CASE_ACTIONS:
        raise Http404
    if not can(staff, CASE_ACTIONS[action]):
        raise NotPermitted(_("You are not allowed to do this."), permission=CASE_ACTIONS[action])
    common = {"case_id": case_id, "staff": staff, "context": context}
    reason = data.get("reason") or ""
    if action == "assign_me":
        actions.assign_case(**common, assignee=staff, reason=reason)
        return _("The case is now yours.")
    if action == "unassign":
        actions.assign_case(**common, assignee=None, reason=reason)
        return _("The case is unassigned.")
    if action == "note":
        actions.add_note(**common, text=data.get("text") or "")
        return _("Note added.")
    if action == "resubmit":
        actions.resubmit_case(**common, reason=reason)
        return _("The case was sent to the core again.")
    if action == "return":
        actions.return_to_customer(**common, reason=reason)
        return _("The case was returned to the customer.")
    if action == "close":
        actions.close_case(**common, reason_code=data.get("reason_code") or "", text=reason)
        return _("The case was closed.")
    if action == "request_override":
        actions.request_override(
            **common,
            kind=data.get("kind") or "",
            reason=reason,
            core_reference=data.get("core_reference") or "",
        )
        return _("Override requested; a supervisor must approve it.")
    override_id = data.get("override_id") or 0
    if not OverrideRequest.objects.filter(pk=override_id, case_id=case_id).exists():
        raise Http404
    if action == "approve_override":
        actions.approve_override(
            override_id=override_id, staff=staff, reason=reason, context=context
        )
        return _("Override approved.")
    actions.reject_override(override_id=override_id, staff=staff, reason=reason, context=context)
    return _("Override rejected.")
