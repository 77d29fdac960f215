"""Back-office pages for staff second factors: replace one's own app, make new backup codes,
reset a lost app (four eyes)."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.core.exceptions import BadRequest, PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django_otp import login as otp_login

from accounts.qr import qr_svg, totp_secret
from portal.backoffice import ENROLMENT_SESSION_KEY, backoffice, require_app_session
from portal.errors import DomainError
from portal.middleware import client_ip, start_staff_session

from . import backup_codes, enrolment, factors, passkeys, reset_history
from .factor_forms import (
    AddPasskeyForm,
    AuthenticatorResetRequestForm,
    EnrolAuthenticatorForm,
    RegenerateBackupCodesForm,
    RemoveStaffPasskeyForm,
    ReplaceStaffAuthenticatorForm,
    StaffPasskeyProofForm,
)
from .passkey_http import options_response
from .services import CheckResult

REPLACE_ERRORS = {
    factors.FactorChangeResult.NOTHING_PENDING: gettext_lazy("Start again: no new app is waiting."),
    factors.FactorChangeResult.WRONG_NEW_CODE: gettext_lazy(
        "The code from the new app is not right."
    ),
    factors.FactorChangeResult.WRONG_PROOF: gettext_lazy(
        "The code from your current app is not right."
    ),
}


ENROL_ERRORS = {
    enrolment.EnrolmentResult.NOTHING_PENDING: gettext_lazy(
        "This key no longer works: setting up was started again in another browser."
    ),
    enrolment.EnrolmentResult.WRONG_CODE: gettext_lazy("The code from the new app is not right."),
}
# The new app this session is setting up, so a reload shows the same key instead of a new one.
ENROLMENT_DEVICE_SESSION_KEY = "backoffice_enrolment_device"


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
    return backoffice.page(
        request,
        "backoffice/authenticator.html",
        _("My authenticator app"),
        pending=pending,
        form=form,
        **_enrolment(pending),
    )


def own_backup_codes(request: HttpRequest) -> HttpResponse:
    """See how many backup codes are left; replace them all with a code from the app.

    The new codes are in this one answer only (the back office sends no-cache headers): not in
    the session, not behind a redirect, so a reload or the back button cannot show them again.
    """
    staff = request.user
    form = RegenerateBackupCodesForm()
    new_codes = None
    if request.method == "POST" and request.POST.get("action") == "regenerate":
        form = RegenerateBackupCodesForm(request.POST)
        if form.is_valid():
            new_codes = backup_codes.regenerate_backup_codes(
                staff=staff, current_code=form.cleaned_data["current_code"], ip=client_ip(request)
            )
            if new_codes is None:
                form.add_error(
                    "current_code", _("The code from your authenticator app is not right.")
                )
            else:
                form = RegenerateBackupCodesForm()
    return backoffice.page(
        request,
        "backoffice/backup_codes.html",
        _("My backup codes"),
        status=400 if form.is_bound and form.errors else 200,
        form=form,
        new_codes=new_codes,
        codes_left=backup_codes.backup_codes_left(staff),
    )


WRONG_APP_CODE = gettext_lazy("The code from your authenticator app is not right.")
PASSKEY_REFUSED = gettext_lazy(
    "The passkey was not added (it may be yours already, or the request ended). "
    "Enter a code from your app and try again."
)


def own_passkeys(request: HttpRequest) -> HttpResponse:
    """A staff member's passkeys: add one (after a code from the app), see them, remove one.

    A session signed in with a backup code changes none of them (``require_app_session``).
    """
    staff = request.user
    action = request.POST.get("action", "") if request.method == "POST" else ""
    if action:
        require_app_session(request)
    user_passkeys = list(passkeys.passkeys_for(staff))
    binding = passkeys.session_binding(request.session)
    prove_form = StaffPasskeyProofForm(prefix="prove")
    add_form = AddPasskeyForm()
    remove_form = RemoveStaffPasskeyForm(prefix="remove", passkeys=user_passkeys)
    if action == "prove":
        prove_form = StaffPasskeyProofForm(request.POST, prefix="prove")
        if prove_form.is_valid():
            result = factors.open_staff_passkey_registration(
                staff=staff, current_code=prove_form.cleaned_data["current_code"], binding=binding
            )
            if result == factors.FactorChangeResult.OK:
                return redirect("backoffice:passkeys")
            prove_form.add_error("current_code", WRONG_APP_CODE)
    elif action == "add":
        add_form = AddPasskeyForm(request.POST)
        if add_form.is_valid():
            outcome = factors.complete_staff_passkey_registration(
                staff=staff,
                binding=binding,
                name=add_form.cleaned_data["name"],
                response=add_form.cleaned_data["credential"],
                ip=client_ip(request),
            )
            if outcome.result == CheckResult.OK:
                messages.success(request, _("Your passkey is added."))
            else:
                messages.error(request, PASSKEY_REFUSED)
            return redirect("backoffice:passkeys")
    elif action == "remove":
        remove_form = RemoveStaffPasskeyForm(request.POST, prefix="remove", passkeys=user_passkeys)
        if remove_form.is_valid():
            result = factors.remove_staff_passkey(
                staff=staff,
                passkey_id=remove_form.cleaned_data["passkey"],
                current_code=remove_form.cleaned_data["current_code"],
                ip=client_ip(request),
            )
            if result == factors.FactorChangeResult.OK:
                messages.success(request, _("The passkey was removed."))
                return redirect("backoffice:passkeys")
            remove_form.add_error("current_code", WRONG_APP_CODE)
    forms_with_errors = [f for f in (prove_form, add_form, remove_form) if f.is_bound and f.errors]
    return backoffice.page(
        request,
        "backoffice/passkeys.html",
        _("My passkeys"),
        status=400 if forms_with_errors else 200,
        passkeys=user_passkeys,
        prove_form=prove_form,
        add_form=add_form,
        remove_form=remove_form,
        adding=passkeys.registration_pending(user=staff, binding=binding),
    )


def own_passkey_options(request: HttpRequest) -> HttpResponse:
    """What the passkeys page's script hands the browser to create a passkey."""
    if request.method != "POST":
        raise BadRequest("POST only")
    require_app_session(request)
    return options_response(
        lambda: passkeys.registration_options(
            user=request.user, binding=passkeys.session_binding(request.session)
        )
    )


def _reset_id(request: HttpRequest) -> int:
    value = request.POST.get("reset_id", "")
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise BadRequest("reset_id must be a number")
    return int(value)


def authenticator_resets(request: HttpRequest) -> HttpResponse:
    """Supervisors: ask for a lost authenticator's reset, or decide another supervisor's request."""
    staff = request.user
    if not factors.may_approve_resets(staff):
        raise PermissionDenied
    form = AuthenticatorResetRequestForm(requested_by=staff)
    action = request.POST.get("action")
    if request.method == "POST":
        require_app_session(request)
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
            reset = factors.approve_authenticator_reset(
                reset_id=_reset_id(request), staff=staff, ip=client_ip(request)
            )
            messages.success(
                request,
                _(
                    "Reset approved: %(name)s's old app no longer works. At their next sign-in "
                    "here, with their password, they set up a new app themselves (within "
                    "%(hours)s hours)."
                )
                % {
                    "name": reset.staff_member.get_username(),
                    "hours": f"{settings.BACKOFFICE_AUTHENTICATOR_ENROLMENT_HOURS:g}",
                },
            )
            return redirect("backoffice:authenticator-resets")
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
    return backoffice.page(
        request,
        "backoffice/authenticator_resets.html",
        _("Reset a lost authenticator app"),
        form=form,
        resets=reset_history.pending_resets_with_account_changes(),
        approved=reset_history.recent_approved_resets_with_enrolment(),
        backup_codes_left=backup_codes.staff_backup_codes_left(),
        few_backup_codes=backup_codes.FEW_BACKUP_CODES_LEFT,
    )


def _enrolment_ended(request: HttpRequest, message: str) -> HttpResponse:
    # The session signed in by password only for this: with the window shut it has no use left.
    logout(request)
    messages.error(request, message)
    return redirect("backoffice:login")


def enrol_authenticator(request: HttpRequest) -> HttpResponse:
    """Set up a new authenticator app after a reset, with a key no one else has seen.

    Served without the second-factor check (the member has no factor yet): only a session that
    signed in at the back office by password within an open enrolment window gets a key.
    """
    user = request.user
    reset_id = request.session.get(ENROLMENT_SESSION_KEY)
    if not user.is_authenticated or not isinstance(reset_id, int):
        return redirect("backoffice:login")
    if user.is_verified():
        return redirect("backoffice:index")
    if request.method == "POST" and request.POST.get("action") == "sign_out":
        # The back office's own sign-out page is behind the second factor, out of reach here.
        logout(request)
        return redirect("backoffice:login")
    form = EnrolAuthenticatorForm()
    device_id = request.session.get(ENROLMENT_DEVICE_SESSION_KEY)
    start_again = request.method == "POST" and request.POST.get("action") == "start_again"
    if request.method == "POST" and not start_again and isinstance(device_id, int):
        form = EnrolAuthenticatorForm(request.POST)
        if form.is_valid():
            result = enrolment.complete_enrolment(
                member=user,
                reset_id=reset_id,
                device_id=device_id,
                code=form.cleaned_data["code"],
                ip=client_ip(request),
            )
            if result == enrolment.EnrolmentResult.OK:
                del request.session[ENROLMENT_SESSION_KEY]
                del request.session[ENROLMENT_DEVICE_SESSION_KEY]
                otp_login(request, factors.confirmed_authenticator(user))
                start_staff_session(request)
                messages.success(request, _("Your new authenticator app is set up."))
                return redirect("backoffice:index")
            if result == enrolment.EnrolmentResult.WINDOW_CLOSED:
                return _enrolment_ended(request, str(enrolment.WINDOW_CLOSED_MESSAGE))
            form.add_error(None, ENROL_ERRORS[result])
    try:
        pending = enrolment.start_enrolment(
            member=user,
            reset_id=reset_id,
            device_id=device_id if isinstance(device_id, int) else None,
            start_again=start_again,
            ip=client_ip(request),
        )
    except enrolment.EnrolmentClosed as error:
        return _enrolment_ended(request, error.message)
    if pending.device is None:
        # Another session holds the key: this one shows when and from where, never the key.
        request.session.pop(ENROLMENT_DEVICE_SESSION_KEY, None)
    else:
        request.session[ENROLMENT_DEVICE_SESSION_KEY] = pending.device.pk
        if start_again:
            return redirect(request.path)  # a reload must not start again once more
    return backoffice.page(
        request,
        "backoffice/authenticator_enrol.html",
        _("Set up your new authenticator app"),
        form=form,
        reset=pending.reset,
        held_elsewhere=pending.device is None,
        too_early=start_again and pending.device is None,
        pending=pending,
        restart_allowed=pending.device is None
        and (pending.restart_from is None or pending.restart_from <= timezone.now()),
        # An unverified session: the page shows none of the back office's menus.
        available_apps=[],
        is_nav_sidebar_enabled=False,
        **_enrolment(pending.device),
    )
