"""Back-office pages that are not a model's change list: the emergency switch."""

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from portal.backoffice import backoffice

from .core.breaker import CircuitBreaker
from .models import CoreRequest, CoreSubmissionSwitch
from .services.emergency import set_core_submissions_paused


class SwitchForm(forms.Form):
    reason = forms.CharField(
        label=gettext_lazy("Reason"),
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3}),
        error_messages={"required": gettext_lazy("Say why: it goes on the audit trail.")},
    )


def core_switch(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("activation.operate_core_switch"):
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
        "breaker": CircuitBreaker.from_settings().state(),
    }
    return TemplateResponse(request, "backoffice/core_switch.html", context)
