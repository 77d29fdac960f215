"""Reads for the rules pages: versions, their rules explained, and how each rule has done.

Statistics come from the fired rules the checkpoint records (live and shadow) and the outcomes
staff record on cases: per rule, how often it fired, and among the cases it fired on, how many
staff confirmed as fraud and how many were a false alarm. Each read is one query, however many
rules there are.
"""

import json
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from audit.models import SystemEvent

from ..models import CaseOutcome, Decision, Evaluation, FiredRule, Rule, RuleSetVersion
from ..rules import KINDS, Param, reason

V = RuleSetVersion.Status
FRAUD = CaseOutcome.Outcome.FRAUD
LEGITIMATE = CaseOutcome.Outcome.LEGITIMATE


@dataclass(frozen=True)
class RuleStats:
    """How one rule did, live and in shadow. Cases are counted once however often it fired."""

    fired_live: int = 0
    cases_live: int = 0
    fraud_live: int = 0
    legitimate_live: int = 0
    fired_shadow: int = 0
    cases_shadow: int = 0
    fraud_shadow: int = 0
    legitimate_shadow: int = 0


NO_STATS = RuleStats()


@dataclass(frozen=True)
class RuleRow:
    """A rule as staff read it: what it does, why it fires, and its numbers."""

    rule: Rule
    kind_label: str
    reason: str
    stats: RuleStats = NO_STATS

    @property
    def params_json(self) -> str:
        return json.dumps(self.rule.params, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class ComparisonRow:
    live: str
    shadow: str
    count: int

    @property
    def differs(self) -> bool:
        return self.live != self.shadow

    @property
    def live_label(self) -> str:
        return _label(self.live)

    @property
    def shadow_label(self) -> str:
        return _label(self.shadow)


@dataclass(frozen=True)
class Comparison:
    """The shadow version's would-be decisions against the decisions taken, evaluation by one."""

    rows: list[ComparisonRow] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(row.count for row in self.rows)

    @property
    def differing(self) -> int:
        return sum(row.count for row in self.rows if row.differs)


@dataclass(frozen=True)
class KindHelp:
    """What an editor needs to write a rule of one kind: its parameters and an example."""

    code: str
    label: str
    params: list[str]
    example: str


def _label(decision: str) -> str:
    return str(Decision(decision).label) if decision in Decision.values else decision


def versions() -> QuerySet[RuleSetVersion]:
    """Every version, newest first, with its number of rules and the people who handled it."""
    return (
        RuleSetVersion.objects.select_related("created_by", "proposed_by", "published_by")
        .annotate(rule_count=Count("rules"))
        .order_by("-number")
    )


def running() -> tuple[RuleSetVersion | None, RuleSetVersion | None]:
    """The live and the shadow version, either of which may be missing (one query)."""
    found = {v.status: v for v in versions().filter(status__in=[V.LIVE, V.SHADOW])}
    return found.get(V.LIVE), found.get(V.SHADOW)


def version(version_id: int) -> RuleSetVersion | None:
    return versions().filter(pk=version_id).first()


def explain(rule: Rule, stats: RuleStats = NO_STATS) -> RuleRow:
    """A rule with its kind's label and its reason in the active language."""
    kind = KINDS.get(rule.kind)
    if kind is None:
        return RuleRow(rule, _("Unknown kind %(kind)s") % {"kind": rule.kind}, "", stats)
    try:
        text = reason(rule.kind, rule.params)
    except (KeyError, TypeError, ValueError):
        # Rules are checked on save; only a row changed by hand in the database lands here.
        text = _("The parameters do not fit this kind.")
    return RuleRow(rule, str(kind.label), text, stats)


def rule_stats(version_ids: list[int]) -> dict[int, RuleStats]:
    """Per rule of these versions: firings, and outcomes of the cases it fired on (one query)."""
    aggregates = {}
    for name, shadow in (("live", False), ("shadow", True)):
        side = Q(shadow=shadow)
        case = Q(evaluation__case__isnull=False)
        aggregates[f"fired_{name}"] = Count("pk", filter=side)
        aggregates[f"cases_{name}"] = Count("evaluation__case", distinct=True, filter=side & case)
        for outcome in (FRAUD, LEGITIMATE):
            aggregates[f"{outcome}_{name}"] = Count(
                "evaluation__case",
                distinct=True,
                filter=side & Q(evaluation__case__risk_outcome__outcome=outcome),
            )
    rows = (
        FiredRule.objects.filter(rule__version_id__in=version_ids)
        .values("rule_id")
        .annotate(**aggregates)
        .order_by()
    )
    return {row.pop("rule_id"): RuleStats(**row) for row in rows}


def rule_rows(version_ids: list[int]) -> dict[int, list[RuleRow]]:
    """The rules of these versions, explained and with their statistics (two queries)."""
    stats = rule_stats(version_ids)
    rows: dict[int, list[RuleRow]] = {pk: [] for pk in version_ids}
    for rule in Rule.objects.filter(version_id__in=version_ids).order_by("version", "pk"):
        rows[rule.version_id].append(explain(rule, stats.get(rule.pk, NO_STATS)))
    return rows


def shadow_comparison(shadow_version_id: int) -> Comparison:
    """How the decisions taken compare with what this shadow version would have decided."""
    rows = (
        Evaluation.objects.filter(shadow_version_id=shadow_version_id)
        .values("decision", "shadow_decision")
        .annotate(count=Count("pk"))
        .order_by("decision", "shadow_decision")
    )
    comparison = [
        ComparisonRow(row["decision"], row["shadow_decision"], row["count"]) for row in rows
    ]
    # Where the shadow disagrees first: that is what staff look for before publishing.
    comparison.sort(key=lambda row: (not row.differs, -row.count))
    return Comparison(comparison)


EVENT_LABELS = {
    "rule_set.draft_started": gettext_lazy("Draft started"),
    "rule_set.draft_changed": gettext_lazy("Draft changed"),
    "rule_set.proposed": gettext_lazy("Proposed"),
    "rule_set.published": gettext_lazy("Published"),
    "rule_set.rejected": gettext_lazy("Rejected"),
    "rule_set.shadow_started": gettext_lazy("Shadow run started"),
    "rule_set.shadow_stopped": gettext_lazy("Shadow run stopped"),
}


@dataclass(frozen=True)
class HistoryEntry:
    event: SystemEvent

    @property
    def label(self) -> str:
        return str(EVENT_LABELS.get(self.event.kind, self.event.kind))


def version_history(version_id: int) -> list[HistoryEntry]:
    """What happened to this version, from the system audit trail."""
    events = (
        SystemEvent.objects.filter(kind__startswith="rule_set.", data__version_id=version_id)
        .select_related("actor")
        .order_by("seq")
    )
    return [HistoryEntry(event) for event in events]


def _describe(param: Param) -> tuple[str, Any]:
    """A parameter in words, and a value that passes its check."""
    values = {"name": param.name, "label": param.label}
    if param.kind == "int":
        values.update(min=param.minimum, max=param.maximum)
        return _("%(name)s (%(label)s): a whole number from %(min)s to %(max)s") % values, (
            param.minimum
        )
    if param.kind == "choice":
        values["choices"] = ", ".join(param.choices)
        return _("%(name)s (%(label)s): one of %(choices)s") % values, param.choices[0]
    if param.kind == "choices":
        values["choices"] = ", ".join(param.choices)
        return _("%(name)s (%(label)s): a list of %(choices)s") % values, list(param.choices[:1])
    if param.kind == "codes":
        return _("%(name)s (%(label)s): a list of two-letter country codes") % values, ["CN"]
    values.update(min=param.minimum, max=param.maximum)
    return _("%(name)s (%(label)s): a list of whole numbers from %(min)s to %(max)s") % values, [
        param.minimum
    ]


def kind_catalogue() -> list[KindHelp]:
    """Every rule kind with the parameters it needs, for the edit form's help."""
    catalogue = []
    for code, kind in KINDS.items():
        described = [_describe(param) for param in kind.params]
        example = {
            param.name: value for param, (_text, value) in zip(kind.params, described, strict=True)
        }
        catalogue.append(
            KindHelp(
                code=code,
                label=str(kind.label),
                params=[text for text, _value in described],
                example=json.dumps(example),
            )
        )
    return catalogue
