from django.http import Http404
from django_otp.plugins.otp_totp.admin import TOTPDeviceAdmin
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.backoffice import backoffice

from .admin_views import authenticator_resets, own_authenticator


class BackofficeTOTPDeviceAdmin(TOTPDeviceAdmin):
    """django-otp's admin, with its config and QR pages answering 404 for a device that is gone.

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


backoffice.register(TOTPDevice, BackofficeTOTPDeviceAdmin)
# Customers' SMS devices hold only code digests; staff have no reason to browse them.


backoffice.register_page("authenticator/", own_authenticator, name="authenticator")
backoffice.register_page("authenticator-resets/", authenticator_resets, name="authenticator-resets")
