from django import forms
from django.utils.translation import gettext_lazy as _

from verification.forms import code_field
from verification.models import Channel


class ChooseChannelForm(forms.Form):
    channel = forms.ChoiceField(
        label=_("How would you like to receive your code?"),
        choices=[(Channel.SMS, Channel.SMS.label), (Channel.EMAIL, Channel.EMAIL.label)],
        widget=forms.RadioSelect,
        error_messages={"required": _("Choose how to receive your code.")},
    )

    def __init__(self, *args, options=(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["channel"].choices = [
            (option.channel.value, f"{option.label} {option.destination}".strip())
            for option in options
            if option.sends_code
        ]


class VerifyCodeForm(forms.Form):
    code = code_field()
    submission_id = forms.UUIDField(required=False, widget=forms.HiddenInput)
