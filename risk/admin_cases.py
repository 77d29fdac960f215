"""Back-office pages for the lists and for outcomes, and the risk panel of the case page.

Registered on import. The views only parse and render; the services check permissions (four
eyes included) again and write the audit trail or the case's timeline.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from accounts.roles import can
from activation.errors import CaseNotFound
from activation.models import ActivationCase
from activation.pii import may_see_pii
from activation.timeline import RequestContext
from portal.backoffice import backoffice
from portal.errors import DomainError
from portal.middleware import client_ip

from .admin_nav import PageLinkAdmin
from .forms_cases import DecideEntryForm, NetworkRangeForm, OutcomeForm, ProposeBlockForm
from .models import ListEntry
from .selectors.cases import risk_panel
from .selectors.lists import lists_page
from .services import lists as list_services
from .services.outcomes import record_outcome

# What each form on the lists page does; every one needs ``manage_risk_lists``.
LIST_FORMS = {
    "propose": ProposeBlockForm,
    "add_range": NetworkRangeForm,
    "approve": DecideEntryForm,
    "reject": DecideEntryForm,
    "remove": DecideEntryForm,
    "propose_removal": DecideEntryForm,
    "approve_removal": DecideEntryForm,
    "reject_removal": DecideEntryForm,
}
# The forms that keep their own prefix on the page (so their fields' ids differ).
FORM_PREFIXES = {"propose": "block", "add_range": "range"}


def _run_list_action(request: HttpRequest, action: str, data: dict) -> str:
    """Call the service for ``action`` with the form's cleaned ``data``; return the message."""
    common = {"actor": request.user, "reason": data["reason"], "ip": client_ip(request)}
    if action == "propose":
        list_services.propose_block(**common, kind=data["kind"], value=data["value"])
        return _("Block proposed: another person must approve it.")
    if action == "add_range":
        entry = list_services.add_network_range(**common, value=data["value"], label=data["label"])
        return _("%(range)s is listed from now on.") % {"range": entry.value}
    if action == "approve":
        list_services.approve_entry(**common, entry_id=data["entry"])
        return _("Block approved: it applies from the next request.")
    if action == "reject":
        list_services.reject_entry(**common, entry_id=data["entry"])
        return _("The proposal was rejected.")
    if action == "propose_removal":
        list_services.propose_removal(**common, entry_id=data["entry"])
        return _("Lifting proposed: the block applies until another person approves.")
    if action == "approve_removal":
        list_services.approve_removal(**common, entry_id=data["entry"])
        return _("The block is lifted: it no longer applies from the next request.")
    if action == "reject_removal":
        list_services.reject_removal(**common, entry_id=data["entry"])
        return _("The block stays: lifting it was turned down.")
    entry = list_services.remove_entry(**common, entry_id=data["entry"])
    return _("%(entry)s is removed from the list.") % {"entry": entry.get_kind_display()}


@require_http_methods(["GET", "POST"])
def risk_lists(request: HttpRequest) -> HttpResponse:
    """Blocked devices and numbers (four eyes to add or lift) and network ranges (at once)."""
    user = request.user
    if not can(user, "view_risk"):
        raise PermissionDenied
    may_manage = can(user, list_services.PERMISSION)
    forms = {
        "propose": ProposeBlockForm(prefix=FORM_PREFIXES["propose"]),
        "add_range": NetworkRangeForm(prefix=FORM_PREFIXES["add_range"]),
    }
    problem, status = "", 200
    if request.method == "POST":
        if not may_manage:
            raise PermissionDenied
        action = request.POST.get("action", "")
        if action not in LIST_FORMS:
            problem, status = _("There is no such action."), 400
        else:
            form = LIST_FORMS[action](request.POST, prefix=FORM_PREFIXES.get(action))
            if action in forms:
                forms[action] = form
            if not form.is_valid():
                status = 400
                if action not in forms:
                    problem = " ".join(" ".join(errors) for errors in form.errors.values())
            else:
                try:
                    message = _run_list_action(request, action, form.cleaned_data)
                except DomainError as error:
                    status = error.http_status
                    if action in forms:
                        form.add_error(None, error.message)
                    else:
                        problem = error.message
                else:
                    messages.success(request, message)
                    return redirect("backoffice:risk-lists")
    return backoffice.page(
        request,
        "risk/backoffice/lists.html",
        _("Risk lists"),
        status=status,
        page=lists_page(pii=may_see_pii(user)),
        may_manage=may_manage,
        propose_form=forms["propose"],
        range_form=forms["add_range"],
        problem=problem,
    )


@require_http_methods(["GET", "POST"])
def case_outcome(request: HttpRequest, case_id: int) -> HttpResponse:
    """Record confirmed fraud or legitimate on a flagged case; back to the case page either way."""
    back = redirect("backoffice:activation_activationcase_change", case_id)
    if request.method != "POST":
        return back
    if not can(request.user, "record_risk_outcome"):
        raise PermissionDenied
    form = OutcomeForm(request.POST)
    if not form.is_valid():
        messages.error(request, form.error_message())
        return back
    try:
        recorded = record_outcome(
            actor=request.user,
            case_id=case_id,
            context=RequestContext.from_request(request),
            **form.cleaned_data,
        )
    except CaseNotFound as error:
        raise Http404 from error
    except DomainError as error:
        messages.error(request, error.message)
        return back
    message = _("Outcome recorded.")
    if recorded.proposed:
        message += " " + _("Block proposed: another person must approve it.")
    if recorded.already_listed:
        message += " " + _("Some of it was already on the block list.")
    messages.success(request, message)
    return back


def case_risk_context(request: HttpRequest, case_id: str) -> dict:
    """The case page's risk panel and outcome form, for staff who may see risk."""
    user = request.user
    # ASCII digits that fit a primary key only; anything else, the admin itself answers.
    if not (can(user, "view_risk") and case_id.isascii() and case_id.isdigit()):
        return {}
    if len(case_id) > 18:
        return {}
    case = (
        ActivationCase.objects.select_related("credit_line__customer")
        .filter(pk=int(case_id))
        .first()
    )
    if case is None:
        return {}
    panel = risk_panel(case, pii=may_see_pii(user))
    may_record = can(user, "record_risk_outcome") and panel.flagged and panel.outcome is None
    return {
        "risk_panel": panel,
        "outcome_form": OutcomeForm() if may_record else None,
        "may_manage_lists": can(user, list_services.PERMISSION),
    }


@admin.register(ListEntry, site=backoffice)
class ListEntryAdmin(PageLinkAdmin):
    """Puts the lists in the back office's navigation; the work is on the lists page."""

    page = "backoffice:risk-lists"


backoffice.register_page("risk/lists/", risk_lists, name="risk-lists")
backoffice.register_page(
    "risk/cases/<int:case_id>/outcome/", case_outcome, name="risk-case-outcome"
)
