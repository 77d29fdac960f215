"""What each failure means to a customer, what to do now, and whether waiting helps."""

import math
from dataclasses import dataclass

from django.conf import settings
from django.utils.functional import Promise, lazy
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .models import FailureReason


def _code_minutes() -> int:
    return max(math.ceil(settings.VERIFICATION_CODE_TTL_SECONDS / 60), 1)


def _expired_what_happened() -> str:
    minutes = _code_minutes()
    return ngettext(
        "Codes are valid for %(minutes)d minute, and the last one ran out before it was entered.",
        "Codes are valid for %(minutes)d minutes, and the last one ran out before it was entered.",
        minutes,
    ) % {"minutes": minutes}


def _expired_what_to_do() -> str:
    minutes = _code_minutes()
    return ngettext(
        "Ask for a new code and enter it within %(minutes)d minute.",
        "Ask for a new code and enter it within %(minutes)d minutes.",
        minutes,
    ) % {"minutes": minutes}


# Evaluated when shown, in the reader's language and with the code lifetime then configured.
_lazy_text = lazy(lambda make: make(), str)


@dataclass(frozen=True)
class Explanation:
    reason: str
    title: Promise
    what_happened: Promise
    what_to_do: Promise
    waiting_helps: bool


EXPLANATIONS: dict[str, Explanation] = {
    explanation.reason: explanation
    for explanation in [
        Explanation(
            FailureReason.CODE_EXPIRED,
            _("Your code expired"),
            _lazy_text(_expired_what_happened),
            _lazy_text(_expired_what_to_do),
            False,
        ),
        Explanation(
            FailureReason.CODE_INVALID,
            _("The code did not match"),
            _("The code entered was not the one we sent, often because an older SMS was used."),
            _("Use the newest SMS, or ask for a new code."),
            False,
        ),
        Explanation(
            FailureReason.TOO_MANY_ATTEMPTS,
            _("Too many wrong codes"),
            _("For your safety, a code stops working after too many wrong tries."),
            _("Ask for a new code. If this keeps happening, our staff will help."),
            False,
        ),
        Explanation(
            FailureReason.DELIVERY_FAILED,
            _("We could not deliver your code"),
            _("The SMS could not be sent to your phone."),
            _("Check your signal and try again in a minute."),
            True,
        ),
        Explanation(
            FailureReason.CORE_BUSY,
            _("Our credit system was busy"),
            _("Very many people were activating at the same moment."),
            _("Retry now: your request is queued and will go through."),
            True,
        ),
        Explanation(
            FailureReason.CORE_UNAVAILABLE,
            _("Our credit system did not answer"),
            _("The system that switches your credit line on did not respond in time."),
            _("Retry activation: nothing was charged and nothing is lost."),
            True,
        ),
        Explanation(
            FailureReason.CORE_REJECTED,
            _("The credit system could not activate your line"),
            _("Something about the account needs checking, for example an expired identity check."),
            _("Our staff are looking at it and will contact you; there is nothing to retry."),
            False,
        ),
        Explanation(
            FailureReason.SYNC_TIMEOUT,
            _("Confirmation is taking too long"),
            _("Your request was sent, but the credit system has not confirmed it yet."),
            _("Our staff have been told and will finish it for you; you do not need to retry."),
            True,
        ),
        Explanation(
            FailureReason.RISK_REVIEW,
            _("A security check is needed"),
            _("To protect you, this activation needs a quick check by our staff."),
            _("Our staff will contact you; please keep your phone nearby."),
            True,
        ),
    ]
}


def explain(reason: str) -> Explanation | None:
    return EXPLANATIONS.get(reason)
