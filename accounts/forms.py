from django import forms
from django.contrib.auth.forms import AuthenticationForm, SetPasswordForm
from django.core.validators import MaxLengthValidator
from django.utils.translation import gettext_lazy as _

from verification.forms import code_field


def limit_username_length(form: AuthenticationForm) -> None:
    """Refuse a username longer than any account's as a form error, before anything is recorded.

    AuthenticationForm sets the field's max_length after the field was built, which only sizes
    the input box: without a validator, 256 characters reach django-axes' 255-character column.
    """
    field = form.fields["username"]
    field.validators.append(MaxLengthValidator(field.max_length))


class SignInForm(AuthenticationForm):
    """One message for an unknown account and a wrong password, so neither is revealed."""

    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": _(
            "That phone number or username and password do not match an account. "
            "Check them and try again."
        ),
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        limit_username_length(self)
        self.fields["username"].label = _("Phone number or username")
        self.fields["username"].widget.attrs.update({"autocomplete": "username"})
        self.fields["password"].label = _("Password")


class PasswordResetRequestForm(forms.Form):
    phone_number = forms.CharField(
        label=_("Phone number"),
        max_length=32,
        widget=forms.TextInput(attrs={"autocomplete": "tel", "inputmode": "tel"}),
        error_messages={"required": _("Enter the phone number of your account.")},
    )


class PasswordResetConfirmForm(SetPasswordForm):
    code = code_field()
    field_order = ["code", "new_password1", "new_password2"]

    def __init__(self, *args, **kwargs) -> None:
        # The account is only known once the code checks out; validate the password generically.
        super().__init__(None, *args, **kwargs)


class ConfirmAuthenticatorForm(forms.Form):
    code = code_field(_("Code from the app"), max_length=20)
