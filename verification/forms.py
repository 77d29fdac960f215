from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .normalize import normalize_code


class OneTimeCodeField(forms.CharField):
    """A one-time code: what was typed or pasted, reduced to its six digits.

    Input that holds no code (letters, five digits, two codes) is a form error here, before any
    device sees it, so a typo never uses up one of the guesses a code allows.
    """

    default_error_messages = {
        "required": _("Enter the code you received."),
        "not_a_code": _("A code has 6 digits. Please enter it again."),
    }

    def clean(self, value):
        value = super().clean(value)
        if value in self.empty_values:
            return value
        code = normalize_code(value)
        if not code:
            raise ValidationError(self.error_messages["not_a_code"], code="not_a_code")
        return code


def code_field(label: str | None = None, *, max_length: int = 200) -> OneTimeCodeField:
    """A one-time code input that phones fill from the SMS and show a number pad for."""
    return OneTimeCodeField(
        label=label or _("Verification code"),
        max_length=max_length,  # generous: a pasted SMS is normalised, not refused
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )
