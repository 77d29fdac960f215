"""Every write that changes an activation's business state: one function per use case.

Each runs in one transaction, locks the case it changes, writes the timeline event in the same
transaction, and schedules side effects (tasks, messages) with ``transaction.on_commit``.
"""

from ._common import CaseNotFound
from .cases import open_case
from .core_updates import (
    UnknownCreditLine,
    escalate_overdue_cases,
    reconcile_activations,
    record_core_callback,
)
from .outbox import deliver_core_request, due_core_request_ids, record_core_result
from .retry import VerificationStarted, passkey_options, start_verification, verify_and_submit

__all__ = [
    "CaseNotFound",
    "UnknownCreditLine",
    "VerificationStarted",
    "deliver_core_request",
    "due_core_request_ids",
    "escalate_overdue_cases",
    "open_case",
    "passkey_options",
    "reconcile_activations",
    "record_core_callback",
    "record_core_result",
    "start_verification",
    "verify_and_submit",
]
