"""Forms for changing an authenticator app: each asks for the current factor as well."""

from django import forms
from django.utils.translation import gettext_lazy as _

from accounts.models import User

from .forms import code_field
from .models import Channel

PROOF_CHOICES = [
    (Channel.TOTP.value, _("A code from my current authenticator app")),
    (Channel.SMS.value, _("A code sent to my phone by SMS (I have no app, or lost it)")),
]


class ProofForm(forms.Form):
    """Proof of the customer's current second factor."""

    proof_channel = forms.ChoiceField(
        label=_("Prove it is you with"), choices=PROOF_CHOICES, widget=forms.RadioSelect
    )
    proof_code = code_field(_("Code that proves it is you"))

    def __init__(self, *args, has_app: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not has_app:
            # Without an app, the SMS code is the only current factor.
            self.fields["proof_channel"].choices = PROOF_CHOICES[1:]
            self.fields["proof_channel"].initial = Channel.SMS.value
        else:
            self.fields["proof_channel"].initial = Channel.TOTP.value


class ConfirmNewAppForm(ProofForm):
    code = code_field(_("Code from the new app"))
    field_order = ["code", "proof_channel", "proof_code"]


class ReplaceStaffAuthenticatorForm(forms.Form):
    current_code = code_field(_("Code from your current app"))
    new_code = code_field(_("Code from the new app"))


class RegenerateBackupCodesForm(forms.Form):
    current_code = code_field(_("Code from your authenticator app"))


class EnrolAuthenticatorForm(forms.Form):
    code = code_field(_("Code from the new app"))


class AuthenticatorResetRequestForm(forms.Form):
    staff_member = forms.ModelChoiceField(label=_("Staff member"), queryset=User.objects.none())
    reason = forms.CharField(
        label=_("Reason"), max_length=500, widget=forms.Textarea(attrs={"rows": 3})
    )

    def __init__(self, *args, requested_by: User, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Superusers are left out: their app is not reset here (the service refuses it too).
        self.fields["staff_member"].queryset = (
            User.objects.filter(is_staff=True, is_active=True, is_superuser=False)
            .exclude(pk=requested_by.pk)
            .order_by("username")
        )
