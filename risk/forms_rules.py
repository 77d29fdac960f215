"""Forms of the rules pages: a draft's thresholds and note, its rules, and a rejection's reason.

They check shape (numbers are numbers, parameters are a JSON object a kind accepts); the rule
set services check again and own the whole-set rules, so nothing reaches the database unchecked.
"""

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .models import Rule, RuleSetVersion
from .rules import KINDS, clean_params
from .services.rulesets import MAX_RULES, MAX_SCORE, RuleSpec

PARAMS_MAX_LENGTH = 2000


class VersionForm(forms.Form):
    step_up_at = forms.IntegerField(
        label=_("Step up at score"),
        min_value=1,
        max_value=MAX_SCORE,
        help_text=_("A total score at or above this asks for more proof."),
    )
    review_at = forms.IntegerField(
        label=_("Review at score"),
        min_value=1,
        max_value=MAX_SCORE,
        help_text=_("A total score at or above this hands the case to staff."),
    )
    note = forms.CharField(
        label=_("What changed"),
        max_length=500,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    @classmethod
    def for_version(cls, version: RuleSetVersion) -> "VersionForm":
        return cls(
            initial={
                "step_up_at": version.step_up_at,
                "review_at": version.review_at,
                "note": version.note,
            }
        )


class RuleForm(forms.Form):
    kind = forms.ChoiceField(label=_("Kind"))
    params = forms.CharField(
        label=_("Parameters (JSON)"),
        required=False,
        max_length=PARAMS_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 40}),
    )
    score = forms.IntegerField(label=_("Score"), min_value=0, max_value=MAX_SCORE)
    enabled = forms.BooleanField(label=_("Enabled"), required=False, initial=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["kind"].choices = [("", "---------")] + [
            (code, kind.label) for code, kind in KINDS.items()
        ]

    def clean_params(self) -> dict[str, Any]:
        text = self.cleaned_data["params"].strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            raise ValidationError(
                _('Write the parameters as a JSON object, for example {"days": 14}.')
            ) from None
        if not isinstance(value, dict):
            raise ValidationError(_("The parameters must be a JSON object."))
        return value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        kind, params = cleaned.get("kind"), cleaned.get("params")
        if kind and params is not None:
            try:
                cleaned["params"] = clean_params(kind, params)
            except ValidationError as error:
                self.add_error("params", error)
        return cleaned


class BaseRuleFormSet(forms.BaseFormSet):
    def specs(self) -> list[RuleSpec]:
        """The rules to save, in order: deleted rows and untouched blank rows left out."""
        return [
            (data["kind"], data["params"], data["score"], data["enabled"])
            for data in self.cleaned_data
            if data and not data.get("DELETE")
        ]


RuleFormSet = forms.formset_factory(
    RuleForm,
    formset=BaseRuleFormSet,
    extra=1,
    can_delete=True,
    max_num=MAX_RULES,
    validate_max=True,
    # However many forms a request claims, no more than this are built.
    absolute_max=MAX_RULES + 1,
)
RULES_PREFIX = "rules"


def rule_formset(data=None, *, rules: list[Rule] = ()) -> BaseRuleFormSet:
    initial = [
        {
            "kind": rule.kind,
            "params": json.dumps(rule.params, ensure_ascii=False, sort_keys=True),
            "score": rule.score,
            "enabled": rule.enabled,
        }
        for rule in rules
    ]
    if data is not None:
        return RuleFormSet(data, prefix=RULES_PREFIX)
    return RuleFormSet(initial=initial, prefix=RULES_PREFIX)


class RejectForm(forms.Form):
    reason = forms.CharField(
        label=_("Why"),
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2}),
        error_messages={"required": _("Say why: it goes on the audit trail.")},
    )
