"""Back-office page for supervisors: sign-in lock-outs, and lifting one with a reason."""

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods

from accounts.roles import can
from portal.backoffice import backoffice
from portal.errors import DomainError
from portal.middleware import client_ip

from . import lockouts


class LiftLockoutForm(forms.Form):
    attempt = forms.IntegerField(min_value=1, max_value=2**63 - 1, widget=forms.HiddenInput)
    reason = forms.CharField(
        label=gettext_lazy("Reason"),
        max_length=500,
        error_messages={"required": gettext_lazy("Say why: it goes on the audit trail.")},
    )


@require_http_methods(["GET", "POST"])
def sign_in_lockouts(request: HttpRequest) -> HttpResponse:
    if not can(request.user, lockouts.PERMISSION):
        raise PermissionDenied
    form = LiftLockoutForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                lifted = lockouts.lift_sign_in_lockout(
                    staff=request.user,
                    attempt_id=form.cleaned_data["attempt"],
                    reason=form.cleaned_data["reason"],
                    ip=client_ip(request),
                )
            except DomainError as error:
                messages.error(request, error.message)
            else:
                messages.success(
                    request,
                    _("The lock-out of %(account)s from %(address)s is lifted.")
                    % {"account": lifted.account, "address": lifted.ip_address or "—"},
                )
            return redirect("backoffice:sign-in-lockouts")
        status = 400
    return backoffice.page(
        request,
        "backoffice/sign_in_lockouts.html",
        _("Sign-in lock-outs"),
        status=status,
        lockouts=lockouts.current_sign_in_lockouts(),
        form=form,
    )
