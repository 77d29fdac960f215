"""The customer's retry: choose a channel, receive a code, enter it, and queue the activation."""

import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext as _

from accounts.models import User
from portal import instruments
from risk.models import Moment
from risk.services import trust_device
from verification import passkeys
from verification.models import Channel, Purpose
from verification.services import (
    ChannelUnavailable,
    CheckResult,
    DeliveryFailed,
    ResendTooSoon,
    TooManyCodes,
    channel_options,
    check_code,
    issue_code,
)

from ..errors import TransitionNotAllowed
from ..models import (
    ActivationCase,
    ActorType,
    CaseEvent,
    CodeSubmission,
    CoreRequest,
    FailureReason,
)
from ..timeline import SYSTEM_CONTEXT, RequestContext, append_case_event
from ..transitions import transition
from . import checkpoint
from ._common import S, activation_payload, enqueue_delivery, lock_case, verification_claim

# How a refused code request is counted in the metrics.
REFUSAL_LABELS = {ResendTooSoon: "too_soon", TooManyCodes: "too_many"}
# States in which a submitted code has already done its work: a repeat is answered as success.
ALREADY_VERIFIED_STATES = frozenset({S.SUBMITTING, S.AWAITING_CONFIRMATION, S.ACTIVATED})


@dataclass(frozen=True)
class VerificationStarted:
    channel: str
    destination: str = ""  # masked; empty for an authenticator app
    delivered: bool = True
    # The checkpoint handed the case to staff; nothing was sent.
    held: bool = False
    # The checkpoint asks for a stronger factor; nothing was sent. ``hint`` says why, plainly.
    step_up: bool = False
    hint: str = ""

    @property
    def result(self) -> str:
        """What came of the request, as the metrics count it."""
        if self.held:
            return "held"
        if self.step_up:
            return "step_up"
        if not self.delivered:
            return "delivery_failed"
        return "started" if self.channel in (Channel.TOTP, Channel.PASSKEY) else "sent"


def _reopen_for_retry(case: ActivationCase, customer: User, context: RequestContext) -> None:
    if case.state == S.FAILED:
        transition(
            case,
            to=S.PENDING_VERIFICATION,
            actor_type=ActorType.CUSTOMER,
            actor=customer,
            data={"trigger": "customer_retry"},
            context=context,
            also={"retry_count": case.retry_count + 1},
        )
    elif case.state != S.PENDING_VERIFICATION:
        raise TransitionNotAllowed(current=case.state, target=S.PENDING_VERIFICATION)


@transaction.atomic
def start_verification(
    *,
    case_id: int,
    customer: User,
    channel: str = Channel.SMS,
    language: str = "",
    context: RequestContext = SYSTEM_CONTEXT,
) -> VerificationStarted:
    """Reopen a failed case for a retry and send a code on ``channel`` (none for an app).

    If the gateway refuses the message the case fails with ``delivery_failed``, so the customer
    is told why and offered the other channels; cooldown and hourly limits raise and change nothing.
    """
    label = instruments.bounded(channel, Channel.values)
    try:
        started = _start_verification(case_id, customer, channel, language, context)
    except (ResendTooSoon, TooManyCodes) as refused:
        instruments.code_requests.labels(label, REFUSAL_LABELS[type(refused)]).inc()
        raise
    instruments.code_requests.labels(label, started.result).inc()
    return started


def _start_verification(
    case_id: int, customer: User, channel: str, language: str, context: RequestContext
) -> VerificationStarted:
    case = lock_case(case_id, customer=customer)
    _reopen_for_retry(case, customer, context)
    if language and customer.preferred_language != language:
        customer.preferred_language = language
        customer.save(update_fields=["preferred_language"])
    checked = checkpoint.check(
        case, customer, moment=Moment.CODE_REQUEST, channel=channel, context=context
    )
    assessment = checked.assessment
    if checked.attempt in checkpoint.HOLDING_DECISIONS:
        checkpoint.hold_for_review(case, assessment, detail=checked.attempt)
        return VerificationStarted(channel=channel, delivered=False, held=True)
    actor = {"actor_type": ActorType.CUSTOMER, "actor": customer, "context": context}
    # A step-up earlier in this attempt sticks: no code that could not be enough is sent.
    if checkpoint.needs_stronger_factor(checked.attempt, channel, customer):
        if not checkpoint.ask_for_stronger_factor(case, customer, assessment, channel=channel):
            return VerificationStarted(channel=channel, delivered=False, held=True)
        return VerificationStarted(
            channel=channel, delivered=False, step_up=True, hint=assessment.customer_hint()
        )
    if channel in (Channel.TOTP, Channel.PASSKEY):
        if not any(option.channel == channel for option in channel_options(customer)):
            raise ChannelUnavailable(_("That way of verifying is not set up for your account."))
        append_case_event(case, kind="verification.started", data={"channel": channel}, **actor)
        return VerificationStarted(channel=channel)
    try:
        issued = issue_code(user=customer, channel=channel)
    except DeliveryFailed:
        append_case_event(
            case, kind="verification.delivery_failed", data={"channel": channel}, **actor
        )
        transition(case, to=S.FAILED, reason=FailureReason.DELIVERY_FAILED, detail=channel, **actor)
        return VerificationStarted(channel=channel, delivered=False)
    append_case_event(
        case,
        kind="verification.sent",
        data={"channel": channel, "destination": issued.destination},
        **actor,
    )
    return VerificationStarted(channel=channel, destination=issued.destination)


def _network_change(case: ActivationCase, context: RequestContext) -> dict[str, Any]:
    """Where the code was asked for, if that differs from where it is entered (not a failure)."""
    started = (
        CaseEvent.objects.filter(case=case, kind__in=["verification.sent", "verification.started"])
        .order_by("-seq")
        .values("ip_address", "device_id")
        .first()
    )
    if not started or not context.ip_address or started["ip_address"] == context.ip_address:
        return {}
    return {"ip_changed": {"from": started["ip_address"], "to": context.ip_address}}


def _fail_locked_out(case: ActivationCase, actor: dict[str, Any]) -> None:
    """A burned code fails the case; repeated lock-outs hand it to staff."""
    transition(case, to=S.FAILED, reason=FailureReason.TOO_MANY_ATTEMPTS, **actor)
    # Lock-outs count from the last time staff lifted them.
    cleared = (
        CaseEvent.objects.filter(case=case, data__lockout_cleared=True)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    # Each burned code is one failed transition; the hand-over to staff itself is not a lock-out.
    lockouts = CaseEvent.objects.filter(
        case=case,
        kind="state.changed",
        state_after=S.FAILED,
        data__reason=FailureReason.TOO_MANY_ATTEMPTS,
        seq__gt=cleared or 0,
    ).count()
    if lockouts >= settings.VERIFICATION_LOCKOUTS_BEFORE_REVIEW:
        transition(
            case,
            to=S.NEEDS_REVIEW,
            reason=FailureReason.TOO_MANY_ATTEMPTS,
            detail=f"{lockouts} lock-outs",
            data={"lockouts": lockouts},
            **{**actor, "actor_type": ActorType.SYSTEM, "actor": None},
        )


@transaction.atomic
def passkey_options(*, case_id: int, customer: User, binding: str) -> dict[str, Any]:
    """A passkey request for this case's verification, as ``navigator.credentials.get`` takes it.

    Only while the case waits for verification: a request belongs to one case and answers no
    other, nor any other purpose.
    """
    case = lock_case(case_id, customer=customer)
    if case.state != S.PENDING_VERIFICATION:
        raise TransitionNotAllowed(current=case.state, target=S.SUBMITTING)
    return passkeys.authentication_options(
        user=customer, purpose=Purpose.ACTIVATION, binding=binding, case_id=case.pk
    )


@transaction.atomic
def verify_and_submit(
    *,
    case_id: int,
    customer: User,
    code: str,
    channel: str = Channel.SMS,
    submission_id: uuid.UUID | None = None,
    context: RequestContext = SYSTEM_CONTEXT,
    passkey_binding: str = "",
) -> CheckResult:
    """Check the customer's code (or, on ``Channel.PASSKEY``, the browser's answer to this
    session's passkey request); if right, queue the activation for the core.

    The same form submitted twice (a double tap, a browser retry after a timeout) gets the first
    answer again, and a right code entered after it already worked is answered as the success
    it was, never as "code invalid".
    """
    case = lock_case(case_id, customer=customer)
    if submission_id is not None:
        earlier = CodeSubmission.objects.filter(case=case, submission_id=submission_id).first()
        if earlier is not None:
            return CheckResult(earlier.result)
    result = _verify_and_submit(case, customer, code, channel, context, passkey_binding)
    instruments.code_submits.labels(instruments.bounded(channel, Channel.values), result).inc()
    if submission_id is not None:
        CodeSubmission.objects.create(case=case, submission_id=submission_id, result=result)
    return result


def _check(
    case: ActivationCase, customer: User, code: str, channel: str, binding: str
) -> passkeys.PasskeyCheck:
    """The code's (or passkey answer's) result, with the passkey that answered or why not."""
    if channel != Channel.PASSKEY:
        return passkeys.PasskeyCheck(check_code(user=customer, channel=channel, code=code))
    return passkeys.check_assertion(
        user=customer,
        purpose=Purpose.ACTIVATION,
        binding=binding,
        response=code,
        case_id=case.pk,
    )


def _timeline_detail(checked: passkeys.PasskeyCheck) -> dict[str, Any]:
    if checked.passkey is not None:
        return {"passkey": checked.passkey.pk}
    return {"why": checked.why} if checked.why else {}


def _verify_and_submit(
    case: ActivationCase,
    customer: User,
    code: str,
    channel: str,
    context: RequestContext,
    binding: str,
) -> CheckResult:
    if case.state in ALREADY_VERIFIED_STATES:
        return CheckResult.OK
    if case.state != S.PENDING_VERIFICATION:
        raise TransitionNotAllowed(current=case.state, target=S.SUBMITTING)

    checked_answer = _check(case, customer, code, channel, binding)
    result, detail = checked_answer.result, _timeline_detail(checked_answer)
    checked = checkpoint.check(
        case,
        customer,
        moment=Moment.CODE_SUBMIT,
        channel=channel,
        context=context,
        code_result=str(result),
    )
    assessment = checked.assessment
    actor = {"actor_type": ActorType.CUSTOMER, "actor": customer, "context": context}
    if result != CheckResult.OK:
        append_case_event(
            case,
            kind="verification.failed",
            data={"channel": channel, "result": result, **detail},
            **actor,
        )
        # An expired passkey request is only asked again; an expired code failed the attempt.
        if result == CheckResult.EXPIRED and channel != Channel.PASSKEY:
            transition(case, to=S.FAILED, reason=FailureReason.CODE_EXPIRED, **actor)
        elif result == CheckResult.BURNED:
            _fail_locked_out(case, actor)
        return result

    append_case_event(
        case,
        kind="verification.succeeded",
        data={"channel": channel, **detail, **_network_change(case, context)},
        **actor,
    )
    decision = checked.attempt
    if decision in checkpoint.HOLDING_DECISIONS:
        checkpoint.hold_for_review(case, assessment, detail=decision)
        return result
    if checkpoint.needs_stronger_factor(
        decision, channel, customer, passkey=checked_answer.passkey
    ):
        if checkpoint.ask_for_stronger_factor(case, customer, assessment, channel=channel):
            return CheckResult.STEP_UP
        return result
    if not assessment.device_trusted:
        trust_device(customer=customer, facts=context.client)
    transition(case, to=S.SUBMITTING, **actor)
    request = CoreRequest.objects.create(
        case=case,
        payload=activation_payload(
            case,
            customer=customer,
            requested_by="customer",
            verification=verification_claim(channel),
        ),
    )
    enqueue_delivery(request.pk)
    return result
