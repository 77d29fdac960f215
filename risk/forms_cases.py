"""Forms of the lists page and of the outcome on the case page.

Values are checked by the same functions the services use, so a bad range, phone number or
device key is a form error beside the field; the services check again whoever calls them.
"""

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS
from django.utils.translation import gettext_lazy as _

from portal.errors import DomainError

from .models import CaseOutcome, ListEntry
from .network import NETWORK_LABELS
from .services.lists import REASON_MAX_LENGTH, clean_block_value, clean_network_range

NETWORK_LABEL_NAMES = {"vpn": _("VPN"), "proxy": _("Proxy"), "hosting": _("Hosting")}


def reason_field() -> forms.CharField:
    return forms.CharField(
        label=_("Reason"),
        max_length=REASON_MAX_LENGTH,
        error_messages={"required": _("Say why: it goes on the audit trail.")},
    )


class ProposeBlockForm(forms.Form):
    kind = forms.ChoiceField(
        label=_("Block"),
        choices=[
            (ListEntry.Kind.DEVICE, ListEntry.Kind.DEVICE.label),
            (ListEntry.Kind.PHONE, ListEntry.Kind.PHONE.label),
        ],
    )
    value = forms.CharField(
        label=_("Device key or phone number"),
        max_length=64,
        help_text=_("The device key is on the case page for staff who may see it."),
    )
    reason = reason_field()

    def clean(self):
        cleaned = super().clean()
        kind, value = cleaned.get("kind"), cleaned.get("value")
        if kind and value:
            try:
                cleaned["value"] = clean_block_value(kind, value)
            except DomainError as error:
                self.add_error("value", error.message)
        return cleaned


class NetworkRangeForm(forms.Form):
    value = forms.CharField(
        label=_("Range"), max_length=64, help_text=_("For example 203.0.113.0/24.")
    )
    label = forms.ChoiceField(
        label=_("Listed as"),
        choices=[(label, NETWORK_LABEL_NAMES.get(label, label)) for label in NETWORK_LABELS],
    )
    reason = reason_field()

    def clean_value(self) -> str:
        try:
            return clean_network_range(self.cleaned_data["value"])
        except DomainError as error:
            raise forms.ValidationError(error.message) from error


class DecideEntryForm(forms.Form):
    """Approve, reject or remove one entry, with a reason."""

    entry = forms.IntegerField(min_value=1, max_value=2**63 - 1, widget=forms.HiddenInput)
    reason = reason_field()


class OutcomeForm(forms.Form):
    outcome = forms.ChoiceField(
        label=_("Outcome"),
        choices=CaseOutcome.Outcome.choices,
        widget=forms.RadioSelect,
        error_messages={"required": _("Choose confirmed fraud or legitimate.")},
    )
    note = forms.CharField(
        label=_("What you found"),
        max_length=CaseOutcome._meta.get_field("note").max_length,
        widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={"required": _("Say what you found: it goes on the case's timeline.")},
    )
    block_device = forms.BooleanField(
        label=_("Propose blocking the devices of this case"), required=False
    )
    block_phone = forms.BooleanField(
        label=_("Propose blocking the customer's phone number"), required=False
    )

    def clean(self):
        cleaned = super().clean()
        blocks = cleaned.get("block_device") or cleaned.get("block_phone")
        if blocks and cleaned.get("outcome") == CaseOutcome.Outcome.LEGITIMATE:
            raise forms.ValidationError(_("Only confirmed fraud can add to the block lists."))
        return cleaned

    def error_message(self) -> str:
        """The errors in one line, for a message on the case page."""
        return " ".join(
            " ".join(errors)
            if name == NON_FIELD_ERRORS
            else f"{self.fields[name].label}: {' '.join(errors)}"
            for name, errors in self.errors.items()
        )
