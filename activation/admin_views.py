"""Back-office pages beyond Django's change lists: case actions, bulk recovery, the switch."""

import json

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from accounts.roles import can
from portal.backoffice import backoffice
from portal.breaker import core_breaker, sms_gateway_breaker
from portal.errors import DomainError
from portal.middleware import client_ip

from . import selectors
from .case_actions import CASE_ACTIONS, run_case_action
from .dashboard import dashboard_context
from .errors import InvalidWindow
from .exports import XLSX_MAX_ROWS, ExportFilters, events_for_export, new_manifest, stream_export
from .forms import CaseActionForm
from .models import (
    CaseExport,
    CaseState,
    CoreRequest,
    CoreSubmissionSwitch,
    FailureReason,
    OverrideRequest,
)
from .services import staff as actions
from .services.bulk_recovery import check_bulk_recovery_window, start_bulk_recovery
from .services.emergency import set_core_submissions_paused
from .timeline import RequestContext


def case_pk(object_id: str) -> int | None:
    """The case id in the case page's URL, or None if it cannot be one (the admin then says the
    case does not exist): ASCII digits only ("²".isdigit() is true, but int() refuses it) that
    fit a primary key."""
    if object_id.isascii() and object_id.isdigit() and len(object_id) <= 18:
        return int(object_id)
    return None


def case_page_context(request: HttpRequest, case_id: str) -> dict:
    """What the case page shows beside the case: notes, overrides, and the actions allowed."""
    pk = case_pk(case_id)
    user = request.user
    return {
        # The newest notes: the timeline, a page at a time, holds every one.
        "notes": selectors.latest_case_notes(pk) if pk is not None else [],
        "notes_shown": selectors.CASE_PAGE_NOTES,
        "pending_overrides": selectors.pending_overrides(pk) if pk is not None else [],
        "allowed_actions": {
            name for name, permission in CASE_ACTIONS.items() if can(user, permission)
        },
        "close_reasons": actions.CLOSE_REASONS,
        "override_kinds": OverrideRequest.Kind.choices,
    }


def case_action(request: HttpRequest, case_id: int, action: str) -> HttpResponse:
    if action not in CASE_ACTIONS:
        raise Http404
    if request.method != "POST":
        return redirect("backoffice:activation_activationcase_change", case_id)
    if not can(request.user, CASE_ACTIONS[action]):
        raise PermissionDenied
    form = CaseActionForm(request.POST)
    if not form.is_valid():
        messages.error(request, form.error_message())
        return redirect("backoffice:activation_activationcase_change", case_id)
    try:
        messages.success(
            request,
            run_case_action(
                action,
                staff=request.user,
                case_id=case_id,
                context=RequestContext.from_request(request),
                data=form.cleaned_data,
            ),
        )
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
        if since and until:
            try:
                check_bulk_recovery_window(since=since, until=until)
            except InvalidWindow as error:
                raise forms.ValidationError(error.message) from error
        return cleaned


def bulk_recovery(request: HttpRequest) -> HttpResponse:
    """Start a bulk recovery (a worker carries it out) and list the recent ones."""
    if not can(request.user, "bulk_recover"):
        raise PermissionDenied
    form = BulkRecoveryForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            job = start_bulk_recovery(
                staff=request.user,
                since=form.cleaned_data["since"],
                until=form.cleaned_data["until"],
                reason=form.cleaned_data["reason"],
                context=RequestContext.from_request(request),
            )
        except DomainError as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, _("The bulk recovery has started."))
            return redirect("backoffice:bulk-recovery-job", job.pk)
    return backoffice.page(
        request,
        "backoffice/bulk_recovery.html",
        _("Bulk recovery after an outage"),
        form=form,
        reasons=actions.BULK_RECOVERY_REASONS,
        jobs=selectors.bulk_recovery_jobs()[:10],
    )


def bulk_recovery_job(request: HttpRequest, job_id: int) -> HttpResponse:
    """One bulk recovery's progress; the page reloads itself until the job is over."""
    if not can(request.user, "bulk_recover"):
        raise PermissionDenied
    job = selectors.bulk_recovery_jobs().filter(pk=job_id).first()
    if job is None:
        raise Http404
    return backoffice.page(
        request,
        "backoffice/bulk_recovery_job.html",
        _("Bulk recovery #%(job)d") % {"job": job.pk},
        job=job,
        refresh_seconds=settings.ACTIVATION_PROGRESS_REFRESH_SECONDS,
    )


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
            ip=client_ip(request),
        )
        messages.success(
            request,
            _("Core submissions resumed.") if paused else _("Core submissions paused."),
        )
        return redirect("backoffice:core-switch")
    return backoffice.page(
        request,
        "backoffice/core_switch.html",
        _("Core submissions"),
        switch=switch,
        paused=paused,
        form=form,
        queued=CoreRequest.objects.filter(status=CoreRequest.Status.PENDING).count(),
        breaker=BREAKER_STATES[core_breaker().state()],
        sms_breaker=BREAKER_STATES[sms_gateway_breaker().state()],
    )


def dashboard(request: HttpRequest) -> HttpResponse:
    """Activations, failures, the queue and the safety switches at a glance (no PII)."""
    if not can(request.user, "view_activationcase"):
        raise PermissionDenied
    context = dashboard_context(timezone.now())
    health = context["health"]
    unknown = _("unknown (the cache did not answer)")
    return backoffice.page(
        request,
        "backoffice/dashboard.html",
        _("Dashboard"),
        core_breaker=BREAKER_STATES.get(health.core_breaker, unknown),
        sms_breaker=BREAKER_STATES.get(health.sms_breaker, unknown),
        **context,
    )


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


EXPORTS_PER_PAGE = 20


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
    return backoffice.page(
        request,
        "backoffice/exports.html",
        _("Export case histories"),
        form=form,
        exports=Paginator(selectors.case_exports(), EXPORTS_PER_PAGE).get_page(
            request.GET.get("page")
        ),
    )


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
