"""Back-office pages beyond Django's change lists: case actions, bulk recovery, the switch."""

import json
from datetime import datetime

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from portal.backoffice import backoffice
from portal.breaker import core_breaker, sms_gateway_breaker
from portal.errors import DomainError

from . import selectors
from .exports import XLSX_MAX_ROWS, ExportFilters, events_for_export, new_manifest, stream_export
from .models import (
    CaseExport,
    CaseState,
    CoreRequest,
    CoreSubmissionSwitch,
    FailureReason,
    OverrideRequest,
)
from .roles import can
from .services import staff as actions
from .services.emergency import set_core_submissions_paused
from .timeline import RequestContext

# Each action: the service it calls, and the permission the page checks before showing it.
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


def case_page_context(request: HttpRequest, case_id: str) -> dict:
    """What the case page shows beside the case: notes, overrides, and the actions allowed."""
    notes = (
        selectors.case_timeline(int(case_id)).filter(kind="note.added") if case_id.isdigit() else []
    )
    user = request.user
    return {
        "notes": notes,
        "pending_overrides": selectors.pending_overrides(int(case_id)) if case_id.isdigit() else [],
        "allowed_actions": {
            name for name, permission in CASE_ACTIONS.items() if can(user, permission)
        },
        "close_reasons": actions.CLOSE_REASONS,
        "override_kinds": OverrideRequest.Kind.choices,
    }


def _run(action: str, request: HttpRequest, case_id: int) -> str:
    """Call the service for ``action``; return the message to show."""
    post = request.POST
    staff = request.user
    context = RequestContext.from_request(request)
    common = {"case_id": case_id, "staff": staff, "context": context}
    reason = post.get("reason", "")
    if action == "assign_me":
        actions.assign_case(**common, assignee=staff, reason=reason)
        return _("The case is now yours.")
    if action == "unassign":
        actions.assign_case(**common, assignee=None, reason=reason)
        return _("The case is unassigned.")
    if action == "note":
        actions.add_note(**common, text=post.get("text", ""))
        return _("Note added.")
    if action == "resubmit":
        actions.resubmit_case(**common, reason=reason)
        return _("The case was sent to the core again.")
    if action == "return":
        actions.return_to_customer(**common, reason=reason)
        return _("The case was returned to the customer.")
    if action == "close":
        actions.close_case(**common, reason_code=post.get("reason_code", ""), text=reason)
        return _("The case was closed.")
    if action == "request_override":
        actions.request_override(
            **common,
            kind=post.get("kind", ""),
            reason=reason,
            core_reference=post.get("core_reference", ""),
        )
        return _("Override requested; a supervisor must approve it.")
    override_id = int(post.get("override_id") or 0)
    if not OverrideRequest.objects.filter(pk=override_id, case_id=case_id).exists():
        raise Http404
    if action == "approve_override":
        actions.approve_override(
            override_id=override_id, staff=staff, reason=reason, context=context
        )
        return _("Override approved.")
    actions.reject_override(override_id=override_id, staff=staff, reason=reason, context=context)
    return _("Override rejected.")


def case_action(request: HttpRequest, case_id: int, action: str) -> HttpResponse:
    if action not in CASE_ACTIONS:
        raise Http404
    if request.method != "POST":
        return redirect("backoffice:activation_activationcase_change", case_id)
    if not can(request.user, CASE_ACTIONS[action]):
        raise PermissionDenied
    try:
        messages.success(request, _run(action, request, case_id))
    except actions.NotPermitted as error:
        raise PermissionDenied(error.message) from error
    except DomainError as error:
        messages.error(request, error.message)
    return redirect("backoffice:activation_activationcase_change", case_id)


class BulkRecoveryForm(forms.Form):
    since = forms.DateTimeField(label=gettext_lazy("Failed since"))
    until = forms.DateTimeField(label=gettext_lazy("Failed before"))
    reason = forms.CharField(label=gettext_lazy("Reason"), max_length=500)

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since >= until:
            raise forms.ValidationError(_("The window must end after it starts."))
        return cleaned


def bulk_recovery(request: HttpRequest) -> HttpResponse:
    if not can(request.user, "bulk_recover"):
        raise PermissionDenied
    form = BulkRecoveryForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        since: datetime = form.cleaned_data["since"]
        result = actions.bulk_recover(
            staff=request.user,
            since=since,
            until=form.cleaned_data["until"],
            reason=form.cleaned_data["reason"],
        )
        messages.success(
            request,
            _("%(resubmitted)d of %(candidates)d cases were sent to the core again.") % result,
        )
        return redirect("backoffice:bulk-recovery")
    context = {
        **backoffice.each_context(request),
        "title": _("Bulk recovery after an outage"),
        "form": form,
        "reasons": actions.BULK_RECOVERY_REASONS,
    }
    return TemplateResponse(request, "backoffice/bulk_recovery.html", context)


class SwitchForm(forms.Form):
    reason = forms.CharField(
        label=gettext_lazy("Reason"),
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"required": gettext_lazy("Say why: it goes on the audit trail.")},
    )


BREAKER_STATES = {
    "closed": gettext_lazy("closed (calls go through)"),
    "open": gettext_lazy("open (no calls for now)"),
    "half_open": gettext_lazy("half-open (one trial call)"),
}


def core_switch(request: HttpRequest) -> HttpResponse:
    if not can(request.user, "operate_core_switch"):
        raise PermissionDenied
    switch = CoreSubmissionSwitch.objects.filter(pk=1).first()
    paused = bool(switch and switch.paused)
    form = SwitchForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        set_core_submissions_paused(
            paused=not paused,
            actor=request.user,
            reason=form.cleaned_data["reason"],
            ip=request.META.get("REMOTE_ADDR"),
        )
        messages.success(
            request,
            _("Core submissions resumed.") if paused else _("Core submissions paused."),
        )
        return redirect("backoffice:core-switch")
    context = {
        **backoffice.each_context(request),
        "title": _("Core submissions"),
        "switch": switch,
        "paused": paused,
        "form": form,
        "queued": CoreRequest.objects.filter(status=CoreRequest.Status.PENDING).count(),
        "breaker": BREAKER_STATES[core_breaker().state()],
        "sms_breaker": BREAKER_STATES[sms_gateway_breaker().state()],
    }
    return TemplateResponse(request, "backoffice/core_switch.html", context)


class ExportForm(forms.Form):
    since = forms.DateTimeField(label=gettext_lazy("Events from"), required=False)
    until = forms.DateTimeField(label=gettext_lazy("Events before"), required=False)
    states = forms.MultipleChoiceField(
        label=gettext_lazy("Case states"),
        choices=CaseState.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    reasons = forms.MultipleChoiceField(
        label=gettext_lazy("Failure reasons"),
        choices=FailureReason.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )
    format = forms.ChoiceField(
        label=gettext_lazy("Format"),
        choices=[("csv", "CSV"), ("jsonl", "JSON Lines"), ("xlsx", "Excel (XLSX)")],
    )

    def filters(self) -> ExportFilters:
        data = self.cleaned_data
        return ExportFilters(
            since=data["since"],
            until=data["until"],
            states=tuple(data["states"]),
            reasons=tuple(data["reasons"]),
        )


def case_exports(request: HttpRequest) -> HttpResponse:
    """Auditors and supervisors download case histories; the manifest is kept beside them."""
    if not can(request.user, "export_case_history"):
        raise PermissionDenied
    form = ExportForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        filters, fmt = form.filters(), form.cleaned_data["format"]
        if fmt == "xlsx" and events_for_export(filters).count() > XLSX_MAX_ROWS:
            form.add_error(
                "format",
                _("XLSX holds at most %(rows)d rows; choose CSV or JSON Lines for this export.")
                % {"rows": XLSX_MAX_ROWS},
            )
        else:
            return _stream_download(request, filters, fmt)
    context = {
        **backoffice.each_context(request),
        "title": _("Export case histories"),
        "form": form,
        "exports": CaseExport.objects.select_related("created_by")[:20],
    }
    return TemplateResponse(request, "backoffice/exports.html", context)


def _stream_download(request: HttpRequest, filters: ExportFilters, fmt: str):
    pii = can(request.user, "view_pii")
    record = CaseExport.objects.create(
        format=fmt, filters=filters.as_json(), pii=pii, created_by=request.user
    )
    manifest = new_manifest(filters=filters, fmt=fmt, actor=request.user, pii=pii)

    def keep(manifest) -> None:
        CaseExport.objects.filter(pk=record.pk).update(
            manifest=json.loads(manifest.to_json()), completed_at=timezone.now()
        )

    response = StreamingHttpResponse(
        stream_export(
            filters=filters,
            fmt=fmt,
            actor=request.user,
            pii=pii,
            manifest=manifest,
            on_complete=keep,
        ),
        content_type=EXPORT_CONTENT_TYPES[fmt],
    )
    response["Content-Disposition"] = f'attachment; filename="case-history-{record.pk}.{fmt}"'
    response["X-Export-Id"] = str(record.pk)
    return response


EXPORT_CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/jsonl; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def export_manifest(request: HttpRequest, export_id: int) -> HttpResponse:
    if not can(request.user, "export_case_history"):
        raise PermissionDenied
    record = CaseExport.objects.filter(pk=export_id, manifest__isnull=False).first()
    if record is None:
        raise Http404
    response = JsonResponse(record.manifest, json_dumps_params={"indent": 2})
    response["Content-Disposition"] = (
        f'attachment; filename="case-history-{record.pk}.manifest.json"'
    )
    return response
