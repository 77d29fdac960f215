"""The back office: Django's admin behind django-otp, so every page needs a verified device."""

from django.utils.translation import gettext_lazy as _
from django_otp.admin import OTPAdminSite


class BackofficeSite(OTPAdminSite):
    site_header = _("Activation Rescue back office")
    site_title = _("Activation Rescue")
    index_title = _("Stuck activations")


backoffice = BackofficeSite(name="backoffice")
