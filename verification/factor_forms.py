"""Forms for changing an authenticator app: each asks for the current factor as well."""

from django import forms
from django.utils.translation import gettext_lazy as _

from accounts.models import User

from .forms import code_field
from .models import Channel
from .passkeys import MAX_RESPONSE_LENGTH

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


class RemovePasskeyForm(ProofForm):
    passkey = forms.TypedChoiceField(label=_("Passkey to remove"), coerce=int)
    field_order = ["passkey", "proof_channel", "proof_code"]

    def __init__(self, *args, passkeys=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["passkey"].choices = [(passkey.pk, passkey.name) for passkey in passkeys]


class AddPasskeyForm(forms.Form):
    """The new passkey's name, and the browser's answer that the page's script fills in."""

    name = forms.CharField(
        label=_("Name it (for example, the phone it is on)"), max_length=64, required=False
    )
    credential = forms.CharField(
        max_length=MAX_RESPONSE_LENGTH,
        strip=False,
        widget=forms.HiddenInput(attrs={"data-passkey-field": ""}),
        error_messages={
            "required": _("Your browser sent no new passkey. Please try again."),
            "max_length": _("Your browser's answer was not one a passkey gives. Please try again."),
        },
    )


class ConfirmNewAppForm(ProofForm):
    code = code_field(_("Code from the new app"))
    field_order = ["code", "proof_channel", "proof_code"]


class ReplaceStaffAuthenticatorForm(forms.Form):
    current_code = code_field(_("Code from your current app"))
    new_code = code_field(_("Code from the new app"))


class StaffPasskeyProofForm(forms.Form):
    current_code = code_field(_("Code from your authenticator app"))


class RemoveStaffPasskeyForm(StaffPasskeyProofForm):
    passkey = forms.TypedChoiceField(label=_("Passkey to remove"), coerce=int)
    field_order = ["passkey", "current_code"]

    def __init__(self, *args, passkeys=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["passkey"].choices = [(passkey.pk, passkey.name) for passkey in passkeys]


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
