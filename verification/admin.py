from django.http import Http404
from django.utils.translation import gettext_lazy as _
from django_otp.plugins.otp_static.admin import StaticDeviceAdmin
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.admin import TOTPDeviceAdmin
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.admin import WebAuthnCredentialAdmin
from django_otp_webauthn.models import WebAuthnCredential

from portal.backoffice import ReadOnlyAdminMixin, backoffice

from . import factors
from .admin_views import (
    authenticator_resets,
    enrol_authenticator,
    own_authenticator,
    own_backup_codes,
    own_passkey_options,
    own_passkeys,
)


class ReadOnlyDeviceAdmin(ReadOnlyAdminMixin):
    """Mix into every django-otp device admin on the back office: it lists, it never writes.

    A form that adds a device, or changes one's owner, key or confirmation, would let one person
    (any superuser) give themselves a second factor of anyone's. Factors change only through
    ``verification.factors`` and ``verification.enrolment``: the owner's replacement with both
    codes, or a reset by two supervisors after which the owner alone sets up the new app.
    """


class BackofficeTOTPDeviceAdmin(ReadOnlyDeviceAdmin, TOTPDeviceAdmin):
    """django-otp's admin, read-only, its config and QR pages answering 404 for no such device.

    django-otp looks the device up with ``objects.get``, so an unknown id is a server error.
    """

    def _device_exists_or_404(self, request, pk: int) -> None:
        if not self.get_queryset(request).filter(pk=pk).exists():
            raise Http404

    def config_view(self, request, pk):
        self._device_exists_or_404(request, pk)
        return super().config_view(request, pk)

    def qrcode_view(self, request, pk):
        self._device_exists_or_404(request, pk)
        return super().qrcode_view(request, pk)


class BackofficeStaticDeviceAdmin(ReadOnlyDeviceAdmin, StaticDeviceAdmin):
    """Who has backup codes and when they last used one; never the codes themselves.

    django-otp lists the codes inline on a device's page unless told to hide sensitive data;
    this admin has no inlines whatever that setting says.
    """

    inlines = []

    def get_inline_instances(self, request, obj=None):
        return []


class BackofficePasskeyAdmin(ReadOnlyDeviceAdmin, WebAuthnCredentialAdmin):
    """Whose passkeys there are and when each was last used; the library's admin, read-only."""


# Any other django-otp device registered here (a passkey) takes ReadOnlyDeviceAdmin too;
# verification/tests/test_admin.py checks every device model on this site.
backoffice.register(TOTPDevice, BackofficeTOTPDeviceAdmin)
backoffice.register(StaticDevice, BackofficeStaticDeviceAdmin)
backoffice.register(WebAuthnCredential, BackofficePasskeyAdmin)
# Customers' SMS devices hold only code digests; staff have no reason to browse them.


backoffice.register_page("authenticator/", own_authenticator, name="authenticator")
backoffice.register_page("backup-codes/", own_backup_codes, name="backup-codes")
backoffice.register_page("passkeys/", own_passkeys, name="passkeys")
backoffice.register_page(
    "passkeys/options/", own_passkey_options, name="passkey-registration-options"
)
backoffice.register_page(
    "authenticator-resets/",
    authenticator_resets,
    name="authenticator-resets",
    menu=_("Authenticator resets"),
    shown_to=factors.may_approve_resets,
)
backoffice.register_enrolment_page(
    "authenticator/enrol/", enrol_authenticator, name="authenticator-enrol"
)
