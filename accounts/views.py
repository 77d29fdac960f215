"""Sign-in, the customer's profile (authenticator app) and password reset by SMS code."""

import base64

import qrcode
import qrcode.image.svg
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.forms import (
    ConfirmAuthenticatorForm,
    PasswordResetConfirmForm,
    PasswordResetRequestForm,
    SignInForm,
)
from accounts.masking import mask_email, mask_phone_number
from verification import services as verification

from . import services

RESET_SESSION_KEY = "password_reset_phone"


class SignInView(LoginView):
    form_class = SignInForm
    redirect_authenticated_user = True


def _qr_svg(text: str) -> str:
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=10)
    return image.to_string(encoding="unicode")


@login_required
@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest) -> HttpResponse:
    user = request.user
    form = ConfirmAuthenticatorForm()
    action = request.POST.get("action")
    if action == "start_app":
        verification.start_totp_enrollment(user=user)
        return redirect("profile")
    if action == "remove_app":
        verification.remove_totp(user=user)
        messages.success(request, _("The authenticator app was removed."))
        return redirect("profile")
    if action == "confirm_app":
        form = ConfirmAuthenticatorForm(request.POST)
        if form.is_valid():
            if verification.confirm_totp_enrollment(user=user, code=form.cleaned_data["code"]):
                messages.success(request, _("Your authenticator app is set up."))
                return redirect("profile")
            form.add_error("code", _("That code is not right. Enter the code the app shows now."))

    pending = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    return render(
        request,
        "accounts/profile.html",
        {
            "phone": mask_phone_number(str(user.phone_number)) if user.phone_number else "",
            "email": mask_email(user.email) if user.email else "",
            "has_app": TOTPDevice.objects.filter(user=user, confirmed=True).exists(),
            "pending": pending,
            "qr_svg": _qr_svg(pending.config_url) if pending else "",
            "secret": base64.b32encode(pending.bin_key).decode() if pending else "",
            "form": form,
        },
    )


@require_http_methods(["GET", "POST"])
def password_reset(request: HttpRequest) -> HttpResponse:
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
        if services.reset_password_with_code(
            phone_number=phone_number,
            code=form.cleaned_data["code"],
            new_password=form.cleaned_data["new_password1"],
        ):
            del request.session[RESET_SESSION_KEY]
            messages.success(request, _("Your password was changed. Sign in with the new one."))
            return redirect("login")
        form.add_error("code", _("That code is not right or has expired. Ask for a new one."))
    return render(request, "accounts/password_reset_confirm.html", {"form": form})
