"""Sign-in, the customer's profile (authenticator app) and password reset by SMS code."""

import math

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms import PasswordResetConfirmForm, PasswordResetRequestForm, SignInForm
from accounts.limits import (
    NUMBER_LIMIT_MESSAGE,
    limit_sign_in_posts,
    refuse_password_reset,
    remember_browser,
)
from accounts.masking import mask_email, mask_phone_number
from accounts.qr import qr_svg, totp_secret
from portal.middleware import client_ip
from portal.ratelimits import too_many_requests
from risk.facts import ClientFacts
from verification import factors, passkeys
from verification.factor_forms import (
    AddPasskeyForm,
    ConfirmNewAppForm,
    ProofForm,
    RemovePasskeyForm,
)
from verification.passkey_http import options_response
from verification.services import CheckResult, VerificationError

from . import services

RESET_SESSION_KEY = "password_reset_phone"
PENDING_APP_SESSION_KEY = "pending_authenticator"


@method_decorator(limit_sign_in_posts, name="dispatch")
class SignInView(LoginView):
    form_class = SignInForm
    redirect_authenticated_user = True

    def form_valid(self, form: SignInForm) -> HttpResponse:
        if form.get_user().is_staff:
            # Said only once the password checked out, so it reveals nothing to a guesser. Staff
            # sign in where their second factor is asked for, never with a password alone.
            form.add_error(
                None,
                _("This is a staff account. Staff sign in to the back office at %(url)s.")
                % {"url": reverse("backoffice:login")},
            )
            return self.form_invalid(form)
        if not services.pass_sign_in_checkpoint(
            user=form.get_user(), facts=ClientFacts.from_request(self.request)
        ):
            form.add_error(
                None,
                _("We cannot sign you in online at the moment. Please call our service line."),
            )
            return self.form_invalid(form)
        return super().form_valid(form)


WRONG_PROOF = gettext_lazy(
    "That code does not prove it is you. Check it, or ask for a new SMS code."
)


def _change_app(request: HttpRequest, action: str, has_app: bool):
    """Run one profile action; return a redirect when done, else the forms to show again."""
    user = request.user
    confirm_form = ConfirmNewAppForm(has_app=has_app)
    remove_form = ProofForm(has_app=has_app, prefix="remove")
    if action == "send_code":
        issued = factors.send_factor_change_code(user=user)
        messages.info(
            request,
            _(
                "We sent a code to %(destination)s. It works only to change your authenticator "
                "app or passkeys."
            )
            % {"destination": issued.destination},
        )
        return redirect("profile")
    if action == "start_app":
        device = factors.start_totp_enrollment(user=user)
        # The key is shown to, and confirmed from, this browser session only: someone else
        # signed in to the account (with a stolen password) never sees it.
        request.session[PENDING_APP_SESSION_KEY] = device.pk
        return redirect("profile")
    if action == "remove_app" and has_app:
        remove_form = ProofForm(request.POST, has_app=has_app, prefix="remove")
        if remove_form.is_valid():
            result = factors.remove_totp(
                user=user,
                proof_channel=remove_form.cleaned_data["proof_channel"],
                proof_code=remove_form.cleaned_data["proof_code"],
                ip=client_ip(request),
            )
            if result == factors.FactorChangeResult.OK:
                messages.success(request, _("The authenticator app was removed."))
                return redirect("profile")
            remove_form.add_error("proof_code", WRONG_PROOF)
    if action == "confirm_app":
        confirm_form = ConfirmNewAppForm(request.POST, has_app=has_app)
        if confirm_form.is_valid():
            result = factors.confirm_totp_enrollment(
                user=user,
                device_id=request.session.get(PENDING_APP_SESSION_KEY),
                code=confirm_form.cleaned_data["code"],
                proof_channel=confirm_form.cleaned_data["proof_channel"],
                proof_code=confirm_form.cleaned_data["proof_code"],
                ip=client_ip(request),
            )
            if result == factors.FactorChangeResult.OK:
                messages.success(request, _("Your authenticator app is set up."))
                return redirect("profile")
            if result == factors.FactorChangeResult.NOTHING_PENDING:
                messages.error(
                    request,
                    _("That set-up has expired or was started elsewhere. Please start again."),
                )
                return redirect("profile")
            if result == factors.FactorChangeResult.WRONG_PROOF:
                confirm_form.add_error("proof_code", WRONG_PROOF)
            else:
                confirm_form.add_error(
                    "code", _("That code is not right. Enter the code the app shows now.")
                )
    return confirm_form, remove_form


PASSKEY_REFUSED = {
    CheckResult.NO_CODE: gettext_lazy("Prove it is you again before adding a passkey."),
    CheckResult.EXPIRED: gettext_lazy(
        "Adding the passkey took too long. Prove it is you again, then add it."
    ),
    CheckResult.THROTTLED: gettext_lazy(
        "Too many tries in a row. Wait a few seconds, then try again."
    ),
    CheckResult.BURNED: gettext_lazy(
        "Your browser's passkey was refused too many times. Prove it is you again to start over."
    ),
}
PASSKEY_INVALID = gettext_lazy(
    "That passkey could not be added (it may be on this account already). Please try again."
)


def _change_passkeys(request: HttpRequest, action: str, has_app: bool, user_passkeys):
    """Add or remove a passkey; return a redirect when done, else the forms to show again."""
    user = request.user
    prove_form = ProofForm(has_app=has_app, prefix="passkey")
    add_form = AddPasskeyForm()
    remove_form = RemovePasskeyForm(
        has_app=has_app, prefix="remove_passkey", passkeys=user_passkeys
    )
    binding = passkeys.session_binding(request.session)
    if action == "passkey_prove":
        prove_form = ProofForm(request.POST, has_app=has_app, prefix="passkey")
        if prove_form.is_valid():
            result = factors.open_passkey_registration(
                user=user,
                proof_channel=prove_form.cleaned_data["proof_channel"],
                proof_code=prove_form.cleaned_data["proof_code"],
                binding=binding,
            )
            if result == factors.FactorChangeResult.OK:
                return redirect(reverse("profile") + "#passkeys")
            prove_form.add_error("proof_code", WRONG_PROOF)
    if action == "passkey_add":
        add_form = AddPasskeyForm(request.POST)
        if add_form.is_valid():
            outcome = factors.complete_passkey_registration(
                user=user,
                binding=binding,
                name=add_form.cleaned_data["name"],
                response=add_form.cleaned_data["credential"],
                ip=client_ip(request),
            )
            if outcome.result == CheckResult.OK:
                messages.success(
                    request,
                    _("Your passkey “%(name)s” is added. Next time, confirm with it.")
                    % {"name": outcome.passkey.name},
                )
                return redirect(reverse("profile") + "#passkeys")
            messages.error(request, PASSKEY_REFUSED.get(outcome.result, PASSKEY_INVALID))
            return redirect(reverse("profile") + "#passkeys")
    if action == "passkey_remove":
        remove_form = RemovePasskeyForm(
            request.POST, has_app=has_app, prefix="remove_passkey", passkeys=user_passkeys
        )
        if remove_form.is_valid():
            result = factors.remove_passkey(
                user=user,
                passkey_id=remove_form.cleaned_data["passkey"],
                proof_channel=remove_form.cleaned_data["proof_channel"],
                proof_code=remove_form.cleaned_data["proof_code"],
                ip=client_ip(request),
            )
            if result == factors.FactorChangeResult.OK:
                messages.success(request, _("The passkey was removed."))
                return redirect(reverse("profile") + "#passkeys")
            remove_form.add_error("proof_code", WRONG_PROOF)
    return prove_form, add_form, remove_form


@login_required
@require_POST
def passkey_registration_options(request: HttpRequest) -> HttpResponse:
    """What the account page's script hands the browser to create a passkey (staff are sent to
    the back office before this, by ``portal.middleware.StaffSessionMiddleware``)."""
    return options_response(
        lambda: passkeys.registration_options(
            user=request.user, binding=passkeys.session_binding(request.session)
        )
    )


@login_required
@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest) -> HttpResponse:
    user = request.user
    has_app = factors.confirmed_authenticator(user) is not None
    user_passkeys = list(passkeys.passkeys_for(user))
    action = request.POST.get("action", "")
    try:
        if action.startswith("passkey_"):
            outcome = _change_passkeys(request, action, has_app, user_passkeys)
        else:
            outcome = _change_app(request, action, has_app)
    except factors.FactorChangeNotAllowed as error:
        raise PermissionDenied(error.message) from error
    except VerificationError as error:
        messages.error(request, error.message)
        return redirect("profile")
    if isinstance(outcome, HttpResponse):
        return outcome
    if action.startswith("passkey_"):
        passkey_forms = outcome
        confirm_form, remove_form = (
            ConfirmNewAppForm(has_app=has_app),
            ProofForm(has_app=has_app, prefix="remove"),
        )
    else:
        confirm_form, remove_form = outcome
        passkey_forms = (
            ProofForm(has_app=has_app, prefix="passkey"),
            AddPasskeyForm(),
            RemovePasskeyForm(has_app=has_app, prefix="remove_passkey", passkeys=user_passkeys),
        )
    pending = factors.pending_authenticator(
        user, device_id=request.session.get(PENDING_APP_SESSION_KEY)
    )
    return render(
        request,
        "accounts/profile.html",
        {
            "passkeys": user_passkeys,
            "passkey_prove_form": passkey_forms[0],
            "passkey_add_form": passkey_forms[1],
            "passkey_remove_form": passkey_forms[2],
            "adding_passkey": passkeys.registration_pending(
                user=user, binding=passkeys.session_binding(request.session)
            ),
            "phone": mask_phone_number(str(user.phone_number)) if user.phone_number else "",
            "email": mask_email(user.email) if user.email else "",
            "has_app": has_app,
            "pending": pending,
            "qr_svg": qr_svg(pending.config_url) if pending else "",
            "secret": totp_secret(pending) if pending else "",
            "form": confirm_form,
            "remove_form": remove_form,
        },
    )


@require_http_methods(["GET", "POST"])
def password_reset(request: HttpRequest) -> HttpResponse:
    if request.method == "POST" and (refusal := refuse_password_reset(request)):
        if refusal.phone_number is None:
            return too_many_requests(request, refusal.seconds, back_url=reverse("login"))
        # Only the number's limit: the codes it already got (perhaps asked for by someone else)
        # still work, so its owner is led to enter one. Each code's guess limit guards that page.
        request.session[RESET_SESSION_KEY] = refusal.phone_number
        minutes = max(1, math.ceil(refusal.seconds / 60))
        messages.warning(request, NUMBER_LIMIT_MESSAGE % {"minutes": minutes})
        return redirect("password_reset_confirm")
    form = PasswordResetRequestForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        phone_number = form.cleaned_data["phone_number"]
        services.request_password_reset(phone_number=phone_number)
        request.session[RESET_SESSION_KEY] = phone_number
        messages.info(
            request,
            _("If this number belongs to an account, we have sent a code to it by SMS."),
        )
        return redirect("password_reset_confirm")
    return render(request, "accounts/password_reset.html", {"form": form})


@require_http_methods(["GET", "POST"])
def password_reset_confirm(request: HttpRequest) -> HttpResponse:
    phone_number = request.session.get(RESET_SESSION_KEY)
    if not phone_number:
        return redirect("password_reset")
    form = PasswordResetConfirmForm(data=request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = services.reset_password_with_code(
            phone_number=phone_number,
            code=form.cleaned_data["code"],
            new_password=form.cleaned_data["new_password1"],
        )
        if user is not None:
            del request.session[RESET_SESSION_KEY]
            # The code proved this browser holds the account's phone: let it past the account's
            # ceiling, or guessers could keep the owner off a new browser even after a reset.
            remember_browser(request, user)
            messages.success(request, _("Your password was changed. Sign in with the new one."))
            return redirect("login")
        form.add_error("code", _("That code is not right or has expired. Ask for a new one."))
    return render(request, "accounts/password_reset_confirm.html", {"form": form})
