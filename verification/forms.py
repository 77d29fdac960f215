from django import forms
from django.utils.translation import gettext_lazy as _


def code_field(label: str | None = None, *, max_length: int = 200) -> forms.CharField:
    """A one-time code input that phones fill from the SMS and show a number pad for."""
    return forms.CharField(
        label=label or _("Verification code"),
        max_length=max_length,  # generous: a pasted SMS is normalised, not refused
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
        error_messages={"required": _("Enter the code you received.")},
    )
