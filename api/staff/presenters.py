"""Cases as the staff API shows them: masked as the back office masks them without view_pii."""

from typing import Any

from accounts.masking import mask_name, mask_phone_number
from activation import selectors as activation_selectors
from activation.models import CORE_REQUEST_FIELDS, ActivationCase, CaseExport
from activation.pii import event_record

from . import selectors


def _staff(user) -> dict[str, Any] | None:
    return {"id": user.pk, "username": user.get_username()} if user is not None else None


def case_summary(case: ActivationCase) -> dict[str, Any]:
    phone = case.credit_line.customer.phone_number
    return {
        "id": case.pk,
        "reference": case.credit_line.reference,
        "customer_phone": mask_phone_number(str(phone)) if phone else "",
        "state": case.state,
        "failure_reason": case.failure_reason,
        "risk_level": case.risk_level,
        "assignee": _staff(case.assignee),
        "opened_at": case.opened_at,
        "sla_due_at": case.sla_due_at,
    }


def _event(event, *, pii: bool) -> dict[str, Any]:
    return {**event_record(event, pii=pii), "hash": event.hash}


def case_detail(case: ActivationCase, *, pii: bool) -> dict[str, Any]:
    """The case, its timeline, its messages to the core and its overrides."""
    customer = case.credit_line.customer.get_username()
    return {
        **case_summary(case),
        "customer": customer if pii else mask_name(customer),
        "credit_line": {
            "reference": case.credit_line.reference,
            "product_name": case.credit_line.product_name,
            "status": case.credit_line.status,
        },
        "failure_detail": case.failure_detail,
        "retry_count": case.retry_count,
        "state_changed_at": case.state_changed_at,
        "closed_at": case.closed_at,
        "timeline": [
            _event(event, pii=pii) for event in activation_selectors.case_timeline(case.pk)
        ],
        "core_requests": list(selectors.case_core_requests(case.pk).values(*CORE_REQUEST_FIELDS)),
        "overrides": [
            {
                "id": override.pk,
                "kind": override.kind,
                "status": override.status,
                "reason": override.reason,
                "core_reference": override.core_reference,
                "requested_by": override.requested_by.get_username(),
                "requested_at": override.requested_at,
                "decided_by": override.decided_by.get_username() if override.decided_by else None,
                "decided_at": override.decided_at,
            }
            for override in selectors.case_overrides(case.pk)
        ],
    }


def export(record: CaseExport, *, download_url: str, manifest_url: str) -> dict[str, Any]:
    return {
        "id": record.pk,
        "format": record.format,
        "filters": record.filters,
        "pii": record.pii,
        "created_at": record.created_at,
        "completed_at": record.completed_at,
        "download_url": download_url,
        "manifest_url": manifest_url,
    }
