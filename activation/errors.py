"""The activation domain's errors, each with a stable code and the HTTP status it maps to."""

from typing import Any

from django.utils.translation import gettext as _

from portal.errors import DomainError, NotPermitted, ReasonRequired

__all__ = [
    "CaseNotFound",
    "InvalidCoreEvent",
    "InvalidCoreSignature",
    "InvalidWindow",
    "NotPermitted",
    "OverrideNotAllowed",
    "ReasonRequired",
    "TransitionNotAllowed",
    "UnknownCreditLine",
]


class CaseNotFound(DomainError):
    code = "case_not_found"
    http_status = 404

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or _("There is no such case among yours."), **details)


class TransitionNotAllowed(DomainError):
    code = "transition_not_allowed"
    http_status = 409

    def __init__(self, *, current: str, target: str) -> None:
        super().__init__(
            _("A case that is %(current)s cannot become %(target)s.")
            % {"current": current, "target": target},
            current=current,
            target=target,
        )


class OverrideNotAllowed(DomainError):
    code = "override_not_allowed"
    http_status = 409


class UnknownCreditLine(DomainError):
    code = "unknown_credit_line"
    http_status = 422


class InvalidWindow(DomainError):
    code = "invalid_window"


class InvalidCoreSignature(DomainError):
    code = "invalid_signature"
    http_status = 401


class InvalidCoreEvent(DomainError):
    """A signed callback the portal cannot take; the core sending it again won't help."""

    code = "invalid_payload"
    http_status = 400

    def __init__(self, **details: Any) -> None:
        super().__init__(
            "The event does not follow the contract; sending it again won't help.", **details
        )
