"""Back-office pages for staff authenticators: replace one's own, reset a lost one (four eyes)."""

from django.contrib import messages
from django.core.exceptions import BadRequest, PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django_otp import login as otp_login

from accounts.qr import qr_svg, totp_secret
from portal.backoffice import backoffice
from portal.errors import DomainError
from portal.middleware import client_ip, start_staff_session

from . import factors
from .factor_forms import AuthenticatorResetRequestForm, ReplaceStaffAuthenticatorForm

REPLACE_ERRORS = {
    factors.FactorChangeResult.NOTHING_PENDING: gettext_lazy("Start again: no new app is waiting."),
    factors.FactorChangeResult.WRONG_NEW_CODE: gettext_lazy(
        "The code from the new app is not right."
    ),
    factors.FactorChangeResult.WRONG_PROOF: gettext_lazy(
        "The code from your current app is not right."
    ),
}


def _page(request: HttpRequest, template: str, title: str, **context) -> TemplateResponse:
    return TemplateResponse(
        request, template, {**backoffice.each_context(request), "title": title, **context}
    )


def _enrolment(device) -> dict:
    if device is None:
        return {}
    return {"qr_svg": qr_svg(device.config_url), "secret": totp_secret(device)}


def own_authenticator(request: HttpRequest) -> HttpResponse:
    """Replace one's own authenticator app with a code from the old one and one from the new."""
    staff = request.user
    form = ReplaceStaffAuthenticatorForm()
    action = request.POST.get("action")
    if action == "start":
        factors.start_staff_authenticator_replacement(staff=staff)
        return redirect("backoffice:authenticator")
    if action == "replace":
        form = ReplaceStaffAuthenticatorForm(request.POST)
        if form.is_valid():
            result = factors.replace_staff_authenticator(
                staff=staff,
                current_code=form.cleaned_data["current_code"],
                new_code=form.cleaned_data["new_code"],
                ip=client_ip(request),
            )
            if result == factors.FactorChangeResult.OK:
                # The session was verified by the old device, which is gone: verify it anew.
                otp_login(request, factors.confirmed_authenticator(staff))
                start_staff_session(request)
                messages.success(request, _("Your new authenticator app is set up."))
                return redirect("backoffice:index")
            form.add_error(None, REPLACE_ERRORS[result])
    pending = factors.pending_authenticator(staff)
    return _page(
        request,
        "backoffice/authenticator.html",
        _("My authenticator app"),
        pending=pending,
        form=form,
        **_enrolment(pending),
    )


def _reset_id(request: HttpRequest) -> int:
    value = request.POST.get("reset_id", "")
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise BadRequest("reset_id must be a number")
    return int(value)


def authenticator_resets(request: HttpRequest) -> HttpResponse:
    """Supervisors: ask for a lost authenticator's reset, or decide another supervisor's request."""
    staff = request.user
    if not staff.groups.filter(name=factors.RESET_APPROVER_ROLE).exists():
        raise PermissionDenied
    form = AuthenticatorResetRequestForm(requested_by=staff)
    handover = None
    action = request.POST.get("action")
    try:
        if action == "request":
            form = AuthenticatorResetRequestForm(request.POST, requested_by=staff)
            if form.is_valid():
                factors.request_authenticator_reset(
                    staff=staff,
                    staff_member_id=form.cleaned_data["staff_member"].pk,
                    reason=form.cleaned_data["reason"],
                    ip=client_ip(request),
                )
                messages.success(request, _("Reset requested; another supervisor must approve it."))
                return redirect("backoffice:authenticator-resets")
        elif action == "approve":
            device = factors.approve_authenticator_reset(
                reset_id=_reset_id(request), staff=staff, ip=client_ip(request)
            )
            # Shown once, in this answer only, for the hand-over in person.
            handover = {"member": device.user, **_enrolment(device)}
        elif action == "reject":
            factors.reject_authenticator_reset(
                reset_id=_reset_id(request), staff=staff, ip=client_ip(request)
            )
            messages.success(request, _("Reset rejected."))
            return redirect("backoffice:authenticator-resets")
    except factors.FactorChangeNotAllowed as error:
        raise PermissionDenied(error.message) from error
    except DomainError as error:
        messages.error(request, error.message)
        return redirect("backoffice:authenticator-resets")
    return _page(
        request,
        "backoffice/authenticator_resets.html",
        _("Reset a lost authenticator app"),
        form=form,
        resets=factors.pending_authenticator_resets(),
        handover=handover,
    )
