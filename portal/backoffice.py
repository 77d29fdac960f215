"""The back office: Django's admin behind django-otp, so every page needs a verified device."""

from django import forms
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite
from django_otp.plugins.otp_totp.models import TOTPDevice


class BackofficeAuthenticationForm(OTPAdminAuthenticationForm):
    """Password plus the code from the staff member's authenticator app.

    Staff verify with TOTP only, so the form uses their confirmed TOTP device instead of asking
    them to pick one (django-otp refuses to guess among several kinds of device).
    """

    otp_device = forms.CharField(required=False, widget=forms.HiddenInput)

    def _chosen_device(self, user):
        device = super()._chosen_device(user)
        if device is None and user is not None:
            device = TOTPDevice.objects.devices_for_user(user, confirmed=True).first()
        return device


class BackofficeSite(OTPAdminSite):
    site_header = _("Activation Rescue back office")
    site_title = _("Activation Rescue")
    index_title = _("Stuck activations")
    login_form = BackofficeAuthenticationForm

    def index(self, request, extra_context=None):
        """The landing page is the work queue: cases waiting for staff, most overdue first."""
        return redirect(
            reverse("backoffice:activation_activationcase_changelist", current_app=self.name)
            + "?state__exact=needs_review"
        )

    def get_urls(self):
        from django.urls import path

        from activation.admin_views import (
            bulk_recovery,
            case_exports,
            core_switch,
            export_manifest,
        )

        return [
            path("exports/", self.admin_view(case_exports), name="exports"),
            path(
                "exports/<int:export_id>/manifest.json",
                self.admin_view(export_manifest),
                name="export-manifest",
            ),
            path("core-submissions/", self.admin_view(core_switch), name="core-switch"),
            path("bulk-recovery/", self.admin_view(bulk_recovery), name="bulk-recovery"),
            *super().get_urls(),
        ]


backoffice = BackofficeSite(name="backoffice")
