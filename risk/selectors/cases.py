"""The risk panel of the back office's case page: what the checkpoint saw, decided and why.

A fixed number of queries whatever the case's history: the newest evaluations with their fired
rules (two queries), the case's devices and their counts (four), the outcome and the list
entries (two), whether it was flagged (one at most).
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, Prefetch, Q
from django.utils import timezone
from django.utils.translation import gettext

from activation.models import ActivationCase, RiskLevel

from ..models import CaseOutcome, Decision, Evaluation, FiredRule, KnownDevice, ListEntry, Moment
from ..rules import KINDS, reason
from ..signals import pseudonym
from .lists import EntryRow, entry_rows, list_entries

# The newest evaluations of a case shown on its page; older ones are on the timeline.
RECENT_EVALUATIONS = 10
# The case's devices described on its page, most recently used first.
DEVICES_SHOWN = 5


@dataclass(frozen=True)
class FiredReason:
    kind: str
    score: int
    reason: str


@dataclass(frozen=True)
class EvaluationRow:
    moment: str
    decision: str
    decision_label: str
    score: int
    version: int | None  # the live rule set's number
    created_at: datetime
    fired: list[FiredReason]
    recognised: str  # "cookie", "fingerprint" or "" as recorded
    listed: str  # the network's label as recorded ("vpn" …) or ""
    shadow_version: int | None = None
    shadow_decision_label: str = ""
    shadow_score: int | None = None
    shadow_fired: list[FiredReason] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        """Only a staff-kept list blocks; no rule can."""
        return self.decision == Decision.BLOCK


@dataclass(frozen=True)
class DeviceFacts:
    shown: str  # the key with view_pii, else the keyed hash the timeline records
    known_since: datetime | None  # first seen with this customer
    last_seen: datetime | None
    verified_at: datetime | None  # when the customer proved themselves on it, if ever
    other_customers_day: int  # other customers evaluated on it in the last 24 hours
    other_customers_ever: int  # other customers who ever used it
    browser: str
    os: str


@dataclass(frozen=True)
class NetworkFacts:
    prefix: str  # the /24 or /64 with view_pii, else its keyed hash
    listed: str
    country: str
    asn: int | None


@dataclass(frozen=True)
class RiskPanel:
    risk_level: str
    risk_level_label: str
    flagged: bool
    evaluations: list[EvaluationRow]
    devices: list[DeviceFacts]
    network: NetworkFacts | None
    outcome: CaseOutcome | None
    entries: list[EntryRow]  # open block entries for the case, its devices or its phone

    @property
    def latest(self) -> EvaluationRow | None:
        return self.evaluations[0] if self.evaluations else None

    @property
    def proposals(self) -> list[EntryRow]:
        return [entry for entry in self.entries if entry.status == ListEntry.Status.PROPOSED]


def _reasons(fired: list[FiredRule]) -> list[FiredReason]:
    """Why each rule fired, in the active language (a kind since retired says so)."""
    return [
        FiredReason(
            kind=item.rule.kind,
            score=item.score,
            reason=reason(item.rule.kind, item.rule.params)
            if item.rule.kind in KINDS
            else gettext("Unknown rule"),
        )
        for item in fired
    ]


def _evaluation_row(evaluation: Evaluation) -> EvaluationRow:
    fired = list(evaluation.fired.all())
    signals: dict[str, Any] = evaluation.signals if isinstance(evaluation.signals, dict) else {}
    network = signals.get("network") if isinstance(signals.get("network"), dict) else {}
    shadow = evaluation.shadow_version
    return EvaluationRow(
        moment=Moment(evaluation.moment).label if evaluation.moment in Moment.values else "",
        decision=evaluation.decision,
        decision_label=evaluation.get_decision_display(),
        score=evaluation.score,
        version=evaluation.version.number if evaluation.version else None,
        created_at=evaluation.created_at,
        fired=_reasons([item for item in fired if not item.shadow]),
        recognised=str(signals.get("device_recognised") or ""),
        listed=str(network.get("listed") or ""),
        shadow_version=shadow.number if shadow else None,
        shadow_decision_label=evaluation.get_shadow_decision_display()
        if evaluation.shadow_decision
        else "",
        shadow_score=evaluation.shadow_score,
        shadow_fired=_reasons([item for item in fired if item.shadow]),
    )


def _network(evaluation: Evaluation | None, *, pii: bool) -> NetworkFacts | None:
    if evaluation is None:
        return None
    signals = evaluation.signals if isinstance(evaluation.signals, dict) else {}
    network = signals.get("network") if isinstance(signals.get("network"), dict) else {}
    asn = network.get("asn")
    return NetworkFacts(
        prefix=evaluation.ip_prefix
        if pii
        else f"#{network['prefix']}"
        if network.get("prefix")
        else "",
        listed=str(network.get("listed") or ""),
        country=str(network.get("country") or ""),
        asn=asn if isinstance(asn, int) else None,
    )


def checkpoint_flagged(case: ActivationCase) -> bool:
    """Whether the checkpoint raised the case's risk or decided anything but allow on it."""
    if case.risk_level in (RiskLevel.MEDIUM, RiskLevel.HIGH):
        return True
    return Evaluation.objects.filter(case=case).exclude(decision=Decision.ALLOW).exists()


def case_device_keys(case: ActivationCase, limit: int = DEVICES_SHOWN) -> list[str]:
    """The devices the case's evaluations saw, most recently used first."""
    return [
        row["device_id"]
        for row in Evaluation.objects.filter(case=case, device__isnull=False)
        .values("device_id")
        .annotate(last=Max("created_at"))
        .order_by("-last", "device_id")[:limit]
    ]


def _devices(keys: list[str], customer_id: int, *, pii: bool) -> list[DeviceFacts]:
    if not keys:
        return []
    known = {
        row.device_id: row
        for row in KnownDevice.objects.filter(
            customer_id=customer_id, device_id__in=keys
        ).select_related("device")
    }
    ever = dict(
        KnownDevice.objects.filter(device_id__in=keys)
        .exclude(customer_id=customer_id)
        .values("device_id")
        .annotate(others=Count("customer", distinct=True))
        .values_list("device_id", "others")
    )
    day = dict(
        Evaluation.objects.filter(
            device_id__in=keys, created_at__gte=timezone.now() - timedelta(hours=24)
        )
        .exclude(customer_id=customer_id)
        .values("device_id")
        .annotate(others=Count("customer", distinct=True))
        .values_list("device_id", "others")
    )
    facts = []
    for key in keys:
        row = known.get(key)
        attributes = row.device.attributes if row is not None else {}
        attributes = attributes if isinstance(attributes, dict) else {}
        facts.append(
            DeviceFacts(
                shown=key if pii else f"#{pseudonym(key)}",
                known_since=row.first_seen if row else None,
                last_seen=row.last_seen if row else None,
                verified_at=row.verified_at if row else None,
                other_customers_day=day.get(key, 0),
                other_customers_ever=ever.get(key, 0),
                browser=str(attributes.get("browser") or ""),
                os=str(attributes.get("os") or ""),
            )
        )
    return facts


def _entries(case: ActivationCase, keys: list[str], phone: str, *, pii: bool) -> list[EntryRow]:
    wanted = Q(case=case)
    if keys:
        wanted |= Q(kind=ListEntry.Kind.DEVICE, value__in=keys)
    if phone:
        wanted |= Q(kind=ListEntry.Kind.PHONE, value=phone)
    entries = (
        list_entries()
        .filter(wanted, status__in=[ListEntry.Status.PROPOSED, ListEntry.Status.ACTIVE])
        .exclude(kind=ListEntry.Kind.NETWORK)
        .order_by("-created_at", "-pk")
    )
    return entry_rows(entries, pii=pii)


def risk_panel(case: ActivationCase, *, pii: bool) -> RiskPanel:
    """What the case page shows of the checkpoint; raw device keys and prefixes only with ``pii``.

    ``case`` must come with ``credit_line__customer`` selected.
    """
    customer = case.credit_line.customer
    evaluations = list(
        Evaluation.objects.filter(case=case)
        .select_related("version", "shadow_version")
        .prefetch_related(
            Prefetch(
                "fired", queryset=FiredRule.objects.select_related("rule").order_by("-score", "pk")
            )
        )
        .order_by("-created_at", "-pk")[:RECENT_EVALUATIONS]
    )
    keys = case_device_keys(case)
    rows = [_evaluation_row(evaluation) for evaluation in evaluations]
    flagged = (
        case.risk_level in (RiskLevel.MEDIUM, RiskLevel.HIGH)
        or any(row.decision != Decision.ALLOW for row in rows)
        # Only older evaluations than those shown are left to look at.
        or (len(rows) == RECENT_EVALUATIONS and checkpoint_flagged(case))
    )
    return RiskPanel(
        risk_level=case.risk_level,
        risk_level_label=case.get_risk_level_display(),
        flagged=flagged,
        evaluations=rows,
        devices=_devices(keys, customer.pk, pii=pii),
        network=_network(evaluations[0] if evaluations else None, pii=pii),
        outcome=CaseOutcome.objects.select_related("recorded_by").filter(case=case).first(),
        entries=_entries(case, keys, str(customer.phone_number or ""), pii=pii),
    )
