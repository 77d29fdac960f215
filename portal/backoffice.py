"""The back office: Django's admin behind django-otp, so every page needs a verified device."""

from django import forms
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.forms import limit_username_length
from portal.middleware import start_staff_session


class BackofficeAuthenticationForm(OTPAdminAuthenticationForm):
    """Password plus the code from the staff member's authenticator app.

    Staff verify with TOTP only, so the form uses their confirmed TOTP device instead of asking
    them to pick one (django-otp refuses to guess among several kinds of device).
    """

    otp_device = forms.CharField(required=False, widget=forms.HiddenInput)
    # django-otp's own label, "OTP Token", has no Chinese translation.
    otp_token = forms.CharField(
        required=False,
        label=_("Verification code"),
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code"}),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        limit_username_length(self)

    def _chosen_device(self, user):
        device = super()._chosen_device(user)
        # A device posted by id counts only if it is one meant for the back office: a code
        # texted for a password reset or an activation must never open it.
        if device is not None and not is_backoffice_factor(device):
            device = None
        if device is None and user is not None:
            device = next(iter(backoffice_factors(user)), None)
        return device


# The second factors that open the back office, in the order they are offered. django-otp's
# StaticDevice (backup codes) and a passkey device join this tuple when staff get them; devices
# that receive codes by SMS or e-mail never do.
BACKOFFICE_FACTOR_MODELS = (TOTPDevice,)


def is_backoffice_factor(device) -> bool:
    return isinstance(device, BACKOFFICE_FACTOR_MODELS) and device.confirmed


def backoffice_factors(user) -> list:
    """The user's confirmed devices that may verify a back-office sign-in."""
    return [
        device
        for model in BACKOFFICE_FACTOR_MODELS
        for device in model.objects.devices_for_user(user, confirmed=True)
    ]


@receiver(user_logged_in)
def _start_staff_session_on_second_factor(sender, request, user, **kwargs) -> None:
    # django-otp marks a user verified by the sign-in form with ``otp_device``.
    if request is not None and getattr(user, "otp_device", None) is not None:
        start_staff_session(request)


class BackofficeSite(OTPAdminSite):
    site_header = _("Activation Rescue back office")
    site_title = _("Activation Rescue")
    index_title = _("Stuck activations")
    login_form = BackofficeAuthenticationForm
    login_template = "backoffice/login.html"

    def index(self, request, extra_context=None):
        """The landing page is the work queue: cases waiting for staff, most overdue first."""
        return redirect(
            reverse("backoffice:activation_activationcase_changelist", current_app=self.name)
            + "?state__exact=needs_review"
        )

    def get_urls(self):
        from django.urls import path

        from accounts.admin_views import sign_in_lockouts
        from activation.admin_views import (
            bulk_recovery,
            bulk_recovery_job,
            case_exports,
            core_switch,
            export_manifest,
        )
        from verification.admin_views import authenticator_urls

        return [
            path("exports/", self.admin_view(case_exports), name="exports"),
            path(
                "exports/<int:export_id>/manifest.json",
                self.admin_view(export_manifest),
                name="export-manifest",
            ),
            path("core-submissions/", self.admin_view(core_switch), name="core-switch"),
            path("bulk-recovery/", self.admin_view(bulk_recovery), name="bulk-recovery"),
            path(
                "bulk-recovery/<int:job_id>/",
                self.admin_view(bulk_recovery_job),
                name="bulk-recovery-job",
            ),
            path("sign-in-lockouts/", self.admin_view(sign_in_lockouts), name="sign-in-lockouts"),
            *authenticator_urls(self),
            *super().get_urls(),
        ]


backoffice = BackofficeSite(name="backoffice")
