from django import forms
from django.utils.translation import gettext_lazy as _

from verification.forms import code_field
from verification.models import Channel
from verification.passkeys import MAX_RESPONSE_LENGTH


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


class SubmissionIdField(forms.UUIDField):
    """The id of one code form; one that cannot be read counts as absent.

    It only makes a double submit answer twice the same. Refusing a garbled one would cost the
    customer a right code over a hidden field they cannot see or fix, while treating it as absent
    loses nothing: a right code sent again finds the case already verified.
    """

    def to_python(self, value):
        try:
            return super().to_python(value)
        except forms.ValidationError:
            return None


class VerifyCodeForm(forms.Form):
    code = code_field()
    submission_id = SubmissionIdField(required=False, widget=forms.HiddenInput)


class PasskeyAnswerForm(forms.Form):
    """The browser's answer to a passkey request, which the page's script puts in ``code``."""

    code = forms.CharField(
        max_length=MAX_RESPONSE_LENGTH,
        strip=False,
        error_messages={
            "required": _("Your browser sent no answer from your passkey. Please try again."),
            "max_length": _("Your browser's answer was not one a passkey gives. Please try again."),
        },
    )
    submission_id = SubmissionIdField(required=False, widget=forms.HiddenInput)


class CaseActionForm(forms.Form):
    """What staff type on the case page before an action (a note, a reason, an override id).

    Django's CharField refuses a NUL character, which PostgreSQL cannot store in text or JSON;
    the lengths keep a pasted page out of the timeline and match the columns that hold them.
    """

    reason = forms.CharField(label=_("Reason"), required=False, max_length=2000)
    text = forms.CharField(label=_("Note"), required=False, max_length=2000)
    reason_code = forms.CharField(label=_("Why the case is closed"), required=False, max_length=32)
    kind = forms.CharField(label=_("Kind of override"), required=False, max_length=32)
    core_reference = forms.CharField(label=_("Core reference"), required=False, max_length=100)
    override_id = forms.IntegerField(
        label=_("Override"), required=False, min_value=1, max_value=2**63 - 1
    )

    def error_message(self) -> str:
        """The errors in one line, each after its field's label, for a message on the case page."""
        return " ".join(
            f"{self.fields[name].label}: {' '.join(errors)}" for name, errors in self.errors.items()
        )
