"""The checkpoint itself: read the signals, run the live (and shadow) rule set, record it all."""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.models import User
from portal import instruments

from ..facts import ClientFacts
from ..models import (
    Decision,
    Device,
    Evaluation,
    FiredRule,
    KnownDevice,
    Moment,
    Rule,
    RuleSetVersion,
    strongest,
)
from ..rules import HINTS, KINDS, clean_params, is_network_rule
from ..signals import Signals

logger = logging.getLogger(__name__)

# Factors that satisfy a step-up on their own (a passkey joins them with issue 12).
STRONG_CHANNELS = frozenset({"totp", "passkey"})
RISK_LEVELS = {
    Decision.ALLOW: "low",
    Decision.STEP_UP: "medium",
    Decision.REVIEW: "high",
    Decision.BLOCK: "high",
}
# A device's "last seen" is kept to within this much, which spares two writes per evaluation.
LAST_SEEN_PRECISION = timedelta(minutes=5)
FAILED_RESULTS = frozenset({"code_invalid", "too_many_attempts", "code_expired"})


@dataclass(frozen=True)
class RuleSetRun:
    """One rule set version's verdict on one set of signals."""

    version: int  # the version's number
    score: int
    decision: str
    fired: tuple[dict[str, Any], ...]

    def as_data(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "score": self.score,
            "decision": self.decision,
            "fired": list(self.fired),
        }


@dataclass(frozen=True)
class Assessment:
    """What the checkpoint decided, and the record of why."""

    evaluation_id: int
    decision: str
    live: RuleSetRun | None
    shadow: RuleSetRun | None = None
    blocked_by: str = ""  # "device" or "phone" when a staff list decided
    signals: dict[str, Any] = field(default_factory=dict)
    # The customer already proved themselves on this very device (by its cookie).
    device_trusted: bool = False
    # The strongest decision of the case's attempt so far (``evaluate``'s ``attempt_since``).
    attempt: str = Decision.ALLOW

    @property
    def risk_level(self) -> str:
        return RISK_LEVELS[self.decision]

    def customer_hint(self) -> str:
        """Why more proof is needed, in words for the customer (never "fraud")."""
        fired = sorted(self.live.fired if self.live else (), key=lambda f: -f["score"])
        key = KINDS[fired[0]["kind"]].hint if fired else "default"
        return str(HINTS[key])

    def event_data(self) -> dict[str, Any]:
        """The timeline's record: signals, each rule that fired, the total and the decision."""
        data: dict[str, Any] = {
            "evaluation": self.evaluation_id,
            "decision": self.decision,
            "signals": self.signals,
        }
        if self.live:
            data["live"] = self.live.as_data()
        if self.shadow:
            data["shadow"] = self.shadow.as_data()
        if self.blocked_by:
            data["blocked_by"] = self.blocked_by
        return data


@dataclass(frozen=True)
class _Version:
    pk: int
    number: int
    step_up_at: int
    review_at: int
    rules: tuple[tuple[int, str, dict, int], ...]


@lru_cache(maxsize=32)
def _rules(version_id: int, published_at) -> tuple[tuple[int, str, dict, int], ...]:
    # A version's rules never change once it runs, so they are read once per process.
    rules = []
    for rule in Rule.objects.filter(version_id=version_id, enabled=True).order_by("pk"):
        # A row written around the forms (a kind since removed, a hand edit) is skipped, never
        # run: its parameters could not be trusted, and a TypeError would fail every sign-in.
        try:
            params = clean_params(rule.kind, rule.params)
        except ValidationError:
            logger.warning("risk rule %s (%s) is not valid and is skipped", rule.pk, rule.kind)
            continue
        rules.append((rule.pk, rule.kind, params, rule.score))
    return tuple(rules)


def running_versions() -> tuple[_Version | None, _Version | None]:
    """The live and the shadow version (either may be missing)."""
    found: dict[str, _Version] = {}
    rows = RuleSetVersion.objects.filter(
        status__in=[RuleSetVersion.Status.LIVE, RuleSetVersion.Status.SHADOW]
    ).values_list("pk", "status", "number", "step_up_at", "review_at", "published_at")
    for pk, status, number, step_up_at, review_at, published_at in rows:
        found[status] = _Version(pk, number, step_up_at, review_at, _rules(pk, published_at))
    return found.get(RuleSetVersion.Status.LIVE), found.get(RuleSetVersion.Status.SHADOW)


def _threshold(version: _Version, score: int) -> str:
    if score >= version.review_at:
        return Decision.REVIEW
    if score >= version.step_up_at:
        return Decision.STEP_UP
    return Decision.ALLOW


def _run(version: _Version, signals: Signals) -> tuple[RuleSetRun, list[tuple[int, int]]]:
    fired, hits = [], []
    for rule_id, kind, params, score in version.rules:
        if KINDS[kind].fires(signals, params):
            fired.append({"rule": rule_id, "kind": kind, "params": params, "score": score})
            hits.append((rule_id, score))
    total = sum(score for _rule, score in hits)
    # Where someone connects from (a VPN, a new address, a busy or noisy network, its crowd of
    # look-alike phones) never asks anyone for more on its own: the other evidence must reach a
    # threshold by itself, and the network's score may then only raise that decision. A crowd
    # on a carrier's network, or an attacker's noise on it, must not hold the honest behind it.
    evidence = sum(
        item["score"] for item in fired if not is_network_rule(item["kind"], item["params"])
    )
    if _threshold(version, evidence) == Decision.ALLOW:
        decision = Decision.ALLOW
    else:
        decision = _threshold(version, total)
    return RuleSetRun(version.number, total, decision, tuple(fired)), hits


def _remember_device(signals: Signals, now) -> None:
    """Record the device and that this customer used it (first and last seen)."""
    key = signals.facts.device_key
    if not key:
        return
    for known in signals.known_devices:
        if (
            known.device_id == key
            and known.device.attributes == signals.attributes
            and known.last_seen >= now - LAST_SEEN_PRECISION
        ):
            return  # seen just now, unchanged (a submit right after its code request)
    Device.objects.bulk_create(
        [Device(key=key, attributes=signals.attributes, first_seen=now, last_seen=now)],
        update_conflicts=True,
        unique_fields=["key"],
        update_fields=["attributes", "last_seen"],
    )
    KnownDevice.objects.bulk_create(
        [KnownDevice(customer=signals.customer, device_id=key, first_seen=now, last_seen=now)],
        update_conflicts=True,
        unique_fields=["customer", "device"],
        update_fields=["last_seen"],
    )


def evaluate(
    *,
    moment: str,
    customer: User,
    facts: ClientFacts,
    case_id: int | None = None,
    channel: str = "",
    code_result: str = "",
    attempt_since: datetime | None = None,
) -> Assessment:
    """Evaluate one sign-in, code request or code submit; runs in the caller's transaction.

    Records the evaluation, the rules that fired (live and shadow) and the device; the caller
    acts on the decision and puts ``event_data()`` on the case timeline. With ``attempt_since``
    (when the case's verification attempt began), ``Assessment.attempt`` is the attempt's
    strongest decision, this one included.
    """
    now = timezone.now()
    live_version, shadow_version = running_versions()
    signals = Signals(
        moment=moment,
        customer=customer,
        facts=facts,
        case_id=case_id,
        channel=channel,
        code_result=code_result,
        now=now,
        attempt_since=attempt_since,
        lockout_days=frozenset(
            params["days"]
            for version in (live_version, shadow_version)
            if version
            for _rule, kind, params, _score in version.rules
            if kind == "earlier_lockouts"
        ),
    )
    live, live_hits = _run(live_version, signals) if live_version else (None, [])
    shadow, shadow_hits = _run(shadow_version, signals) if shadow_version else (None, [])
    blocked_by = signals.listed
    decision = live.decision if live else Decision.ALLOW
    if blocked_by:
        decision = Decision.BLOCK
    recorded = signals.recorded()
    _remember_device(signals, now)
    evaluation = Evaluation.objects.create(
        moment=moment,
        customer=customer,
        case_id=case_id,
        device_id=facts.device_key or None,
        ip_prefix=signals.network.prefix,
        look=signals.look,
        channel=channel,
        code_result=code_result,
        code_failed=code_result in FAILED_RESULTS,
        version_id=live_version.pk if live_version else None,
        score=live.score if live else 0,
        decision=decision,
        shadow_version_id=shadow_version.pk if shadow_version else None,
        shadow_score=shadow.score if shadow else None,
        shadow_decision=shadow.decision if shadow else "",
        signals=recorded,
        created_at=now,
    )
    fired = [
        FiredRule(evaluation=evaluation, rule_id=rule_id, score=score, shadow=False)
        for rule_id, score in live_hits
    ] + [
        FiredRule(evaluation=evaluation, rule_id=rule_id, score=score, shadow=True)
        for rule_id, score in shadow_hits
    ]
    if fired:
        FiredRule.objects.bulk_create(fired)
    instruments.risk_decisions.labels(decision, instruments.bounded(moment, Moment.values)).inc()
    return Assessment(
        evaluation_id=evaluation.pk,
        decision=decision,
        live=live,
        shadow=shadow,
        blocked_by=blocked_by,
        signals=recorded,
        device_trusted=signals.device_trusted,
        attempt=strongest(decision, *signals.earlier_decisions) if attempt_since else decision,
    )


def strongest_decision_since(case_id: int, since) -> str:
    """The strongest decision taken on a case since ``since`` (a step-up sticks to the attempt)."""
    decisions = Evaluation.objects.filter(case_id=case_id, created_at__gte=since).values_list(
        "decision", flat=True
    )
    return strongest(*set(decisions))


def strong_factor_cutoff(customer: User) -> datetime:
    """A stronger factor counts only if the customer had it before this moment: set up at least
    ``RISK_STRONG_FACTOR_MIN_AGE_HOURS`` ago and before the phone number, e-mail or password last
    changed. Whoever took over a number (a SIM swap) can text themselves a code to set up an app
    or add a passkey; neither must answer the step-up that the swap itself caused.
    """
    cutoff = timezone.now() - timedelta(hours=settings.RISK_STRONG_FACTOR_MIN_AGE_HOURS)
    for changed in (
        customer.phone_number_changed_at,
        customer.email_changed_at,
        customer.password_reset_at,
    ):
        if changed is not None:
            cutoff = min(cutoff, changed)
    return cutoff


def established_strong_channels(customer: User) -> frozenset[str]:
    """The stronger factors the customer already had (``strong_factor_cutoff``)."""
    from django_otp.plugins.otp_totp.models import TOTPDevice
    from django_otp_webauthn.models import WebAuthnCredential

    cutoff = strong_factor_cutoff(customer)
    established = set()
    for channel, model in (("totp", TOTPDevice), ("passkey", WebAuthnCredential)):
        if model.objects.filter(user=customer, confirmed=True, created_at__lt=cutoff).exists():
            established.add(channel)
    return frozenset(established)


def trust_device(*, customer: User, facts: ClientFacts) -> None:
    """The customer proved themselves on this device: recognise it from now on."""
    if facts.device_key:
        KnownDevice.objects.filter(
            customer=customer, device_id=facts.device_key, verified_at__isnull=True
        ).update(verified_at=timezone.now())
