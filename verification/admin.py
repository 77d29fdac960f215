from django_otp.plugins.otp_totp.admin import TOTPDeviceAdmin
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.backoffice import backoffice

backoffice.register(TOTPDevice, TOTPDeviceAdmin)
# Customers' SMS devices hold only code digests; staff have no reason to browse them.
