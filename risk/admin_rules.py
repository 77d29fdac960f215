"""Back-office pages for rule sets (registered on import): the rules page and a version's page.

Staff read how each rule does (live and in shadow), edit drafts, propose them, and publish what
another person proposed. The views only parse and render; the services check permissions and
states again and write the audit trail.
"""

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from accounts.roles import can
from portal.backoffice import backoffice
from portal.errors import DomainError, NotPermitted
from portal.middleware import client_ip

from .admin_nav import PageLinkAdmin
from .forms_rules import RejectForm, VersionForm, rule_formset
from .models import RuleSetVersion
from .selectors import rules as selectors
from .services import rulesets

V = RuleSetVersion.Status
VERSIONS_SHOWN = 50

# Each action on a version: the permission the page checks (the service checks it again).
VERSION_ACTIONS = {
    "new_draft": "edit_rules",
    "propose": "edit_rules",
    "shadow": "edit_rules",
    "stop_shadow": "edit_rules",
    "publish": "publish_rules",
    "reject": "publish_rules",
    "retire": "publish_rules",
}


def _may_view(request: HttpRequest) -> None:
    if not can(request.user, "view_risk"):
        raise PermissionDenied


@require_http_methods(["GET"])
def rules_page(request: HttpRequest) -> HttpResponse:
    """The versions, what the live and shadow versions hold, and how each rule has done."""
    _may_view(request)
    live, shadow = selectors.running()
    rows = selectors.rule_rows([v.pk for v in (live, shadow) if v is not None])
    return backoffice.page(
        request,
        "risk/backoffice/rules.html",
        _("Rule sets"),
        versions=selectors.versions()[:VERSIONS_SHOWN],
        live=live,
        live_rules=rows.get(live.pk, []) if live else [],
        shadow=shadow,
        shadow_rules=rows.get(shadow.pk, []) if shadow else [],
        comparison=selectors.shadow_comparison(shadow.pk) if shadow else None,
        may_edit=can(request.user, "edit_rules"),
    )


def _version_or_404(version_id: int) -> RuleSetVersion:
    version = selectors.version(version_id)
    if version is None:
        raise Http404
    return version


@require_http_methods(["GET", "POST"])
def version_page(request: HttpRequest, version_id: int) -> HttpResponse:
    """One version: its rules and numbers, its history, the edit form while it is a draft."""
    _may_view(request)
    version = _version_or_404(version_id)
    may_edit = can(request.user, "edit_rules")
    if request.method == "GET":
        if version.status != V.DRAFT or not may_edit:
            return _render_version(request, version)
        form = VersionForm.for_version(version)
        formset = rule_formset(rules=list(version.rules.order_by("pk")))
        return _render_version(request, version, form=form, formset=formset)
    if not may_edit:
        raise PermissionDenied
    if version.status != V.DRAFT:
        problem = _("Only a draft can be changed; start a new draft from this version.")
        return _render_version(request, version, problem=problem, status=409)
    form, formset = VersionForm(request.POST), rule_formset(request.POST)
    if form.is_valid() and formset.is_valid() and _save_draft(request, version, form, formset):
        messages.success(request, _("The draft is saved."))
        return redirect("backoffice:risk-rule-set", version.pk)
    return _render_version(request, version, form=form, formset=formset, status=400)


def _save_draft(request: HttpRequest, version: RuleSetVersion, form, formset) -> bool:
    """Save the valid forms through the service; its refusals become errors on the form."""
    data = form.cleaned_data
    try:
        rulesets.update_draft(
            actor=request.user,
            version_id=version.pk,
            step_up_at=data["step_up_at"],
            review_at=data["review_at"],
            note=data["note"],
            rules=formset.specs(),
            ip=client_ip(request),
        )
    except ValidationError as error:
        form.add_error(None, error)
    except NotPermitted as error:
        raise PermissionDenied(error.message) from error
    except DomainError as error:
        # Proposed or run by someone else since this page was opened.
        form.add_error(None, error.message)
    else:
        return True
    return False


def _render_version(
    request: HttpRequest,
    version: RuleSetVersion,
    *,
    form=None,
    formset=None,
    problem: str = "",
    status: int = 200,
) -> HttpResponse:
    comparison = selectors.shadow_comparison(version.pk)
    return backoffice.page(
        request,
        "risk/backoffice/rules_version.html",
        _("Rule set version %(number)s") % {"number": version.number},
        status=status,
        version=version,
        rules=selectors.rule_rows([version.pk])[version.pk],
        form=form,
        formset=formset,
        problem=problem,
        kinds=selectors.kind_catalogue() if form is not None else [],
        comparison=comparison if comparison.total else None,
        history=selectors.version_history(version.pk),
        actions=_actions_for(request.user, version),
        reject_form=RejectForm(),
    )


def _actions_for(user, version: RuleSetVersion) -> set[str]:
    """The buttons worth showing; the services decide (four eyes included) when they are used."""
    by_status = {
        V.DRAFT: {"propose", "shadow", "new_draft"},
        V.PROPOSED: {"publish", "reject", "retire", "shadow", "new_draft"},
        V.SHADOW: {"stop_shadow", "new_draft"}
        | ({"publish"} if version.proposed_by_id else {"propose"}),
        V.LIVE: {"new_draft"},
        V.RETIRED: {"new_draft"},
    }
    return {
        action
        for action in by_status[version.status]
        if can(user, VERSION_ACTIONS[action])
        and not (action in ("publish", "reject", "retire") and version.proposed_by_id == user.pk)
    }


def _run(request: HttpRequest, version_id: int, action: str) -> tuple[int, str]:
    """Call the service for ``action``; return the version to show next and the message."""
    common = {"actor": request.user, "ip": client_ip(request)}
    if action == "new_draft":
        draft = rulesets.start_draft(**common, from_version=version_id)
        return draft.pk, _("Draft version %(number)s started.") % {"number": draft.number}
    if action == "propose":
        rulesets.propose(**common, version_id=version_id)
        return version_id, _("Proposed: a second person must publish it.")
    if action == "publish":
        version = rulesets.publish(**common, version_id=version_id)
        return version_id, _("Version %(number)s is live.") % {"number": version.number}
    if action == "shadow":
        rulesets.start_shadow(**common, version_id=version_id)
        return version_id, _("The version runs in shadow: it records and decides nothing.")
    if action == "stop_shadow":
        rulesets.stop_shadow(**common, version_id=version_id)
        return version_id, _("The shadow run stopped.")
    form = RejectForm(request.POST)
    if not form.is_valid():
        raise ValidationError(list(form.errors["reason"]))
    rulesets.reject(
        **common,
        version_id=version_id,
        reason=form.cleaned_data["reason"],
        retire=action == "retire",
    )
    return version_id, _("The proposal was rejected.")


@require_http_methods(["GET", "POST"])
def version_action(request: HttpRequest, version_id: int, action: str) -> HttpResponse:
    """Propose, publish, reject, run in shadow, stop, or start a new draft from a version."""
    if action not in VERSION_ACTIONS:
        raise Http404
    _may_view(request)
    _version_or_404(version_id)
    if request.method != "POST":
        return redirect("backoffice:risk-rule-set", version_id)
    if not can(request.user, VERSION_ACTIONS[action]):
        raise PermissionDenied
    try:
        shown, message = _run(request, version_id, action)
    except NotPermitted as error:
        raise PermissionDenied(error.message) from error
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    except DomainError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, message)
        return redirect("backoffice:risk-rule-set", shown)
    return redirect("backoffice:risk-rule-set", version_id)


@admin.register(RuleSetVersion, site=backoffice)
class RuleSetVersionAdmin(PageLinkAdmin):
    """Puts the rule sets in the back office's navigation; the work is on the rules page."""

    page = "backoffice:risk-rules"


backoffice.register_page("risk/rules/", rules_page, name="risk-rules")
backoffice.register_page("risk/rules/<int:version_id>/", version_page, name="risk-rule-set")
backoffice.register_page(
    "risk/rules/<int:version_id>/<str:action>/", version_action, name="risk-rule-set-action"
)
