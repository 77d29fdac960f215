"""Where activation meets the risk checkpoint: evaluate, record on the timeline, act on it.

The rules and the signals live in ``risk``; this module only asks it and applies the decision
to the case: a hold hands the case to staff, a step-up asks for a stronger factor.
"""

from dataclasses import dataclass
from typing import Any

from django_otp.models import Device

from accounts.models import User
from risk.models import Decision, Moment
from risk.services import STRONG_CHANNELS, Assessment, evaluate
from risk.services.checkpoint import (
    RISK_LEVELS,
    established_strong_channels,
    strong_factor_cutoff,
    strongest_decision_since,
)
from verification.models import Channel

from ..models import ActivationCase, ActorType, FailureReason
from ..timeline import RequestContext, append_case_event
from ..transitions import transition
from ._common import S

HOLDING_DECISIONS = frozenset({Decision.REVIEW, Decision.BLOCK})


@dataclass(frozen=True)
class Checked:
    """An evaluation, and the strongest decision of the attempt it belongs to."""

    assessment: Assessment
    attempt: str  # a step-up earlier in this attempt sticks until it is met


def check(
    case: ActivationCase,
    customer: User,
    *,
    moment: Moment,
    channel: str,
    context: RequestContext,
    code_result: str = "",
) -> Checked:
    """Evaluate this moment of the locked case and put the evaluation on its timeline."""
    assessment = evaluate(
        moment=moment,
        customer=customer,
        facts=context.client,
        case_id=case.pk,
        channel=channel,
        code_result=code_result,
        attempt_since=case.state_changed_at,
    )
    append_case_event(
        case,
        kind="risk.evaluated",
        actor_type=ActorType.SYSTEM,
        data={"moment": moment, "channel": channel, **assessment.event_data()},
    )
    # The level follows the attempt's strongest decision: a step-up earlier in this attempt is
    # not lowered by a cleaner picture later (another network before the submit).
    attempt = assessment.attempt
    level = RISK_LEVELS[attempt]
    if case.risk_level != level:
        case.risk_level = level
        case.save(update_fields=["risk_level"])
    return Checked(assessment, attempt)


def attempt_decision(case: ActivationCase) -> str:
    """The strongest decision of this verification attempt: a step-up sticks until it is met."""
    return strongest_decision_since(case.pk, case.state_changed_at)


def needs_stronger_factor(
    decision: str, channel: str, customer: User, *, passkey: Device | None = None
) -> bool:
    """Whether a step-up still wants more than this channel's code (or this passkey).

    A passkey that answered counts only if it is itself one the customer already had: an older
    passkey on the account says nothing about one added this morning.
    """
    if decision != Decision.STEP_UP:
        return False
    if passkey is not None:
        return not passkey.created_at < strong_factor_cutoff(customer)
    return channel not in STRONG_CHANNELS or channel not in established_strong_channels(customer)


def has_stronger_factor(customer: User) -> bool:
    return bool(established_strong_channels(customer))


def stronger_channel(customer: User) -> str:
    """The stronger factor to ask for at a step-up: a passkey if the customer has one."""
    established = established_strong_channels(customer)
    return Channel.PASSKEY if Channel.PASSKEY in established else Channel.TOTP


def hold_for_review(case: ActivationCase, assessment: Assessment, *, detail: str) -> None:
    """Hand the case to staff with ``risk_review``; the customer is told a check is needed."""
    data: dict[str, Any] = {"evaluation": assessment.evaluation_id, "decision": assessment.decision}
    transition(
        case,
        to=S.NEEDS_REVIEW,
        reason=FailureReason.RISK_REVIEW,
        detail=detail,
        data=data,
        actor_type=ActorType.SYSTEM,
    )


def ask_for_stronger_factor(
    case: ActivationCase, customer: User, assessment: Assessment, *, channel: str
) -> bool:
    """Record that a stronger factor is needed; False if the customer has none (then staff)."""
    if not has_stronger_factor(customer):
        hold_for_review(case, assessment, detail="step_up_without_factor")
        return False
    append_case_event(
        case,
        kind="risk.step_up_required",
        actor_type=ActorType.SYSTEM,
        data={"evaluation": assessment.evaluation_id, "channel": channel},
    )
    return True
