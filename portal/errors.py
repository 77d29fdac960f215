"""One home for domain errors and their API representation."""

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler


class DomainError(Exception):
    """Base class for every business-rule error; ``code`` is stable and machine-readable."""

    code = "domain_error"
    http_status = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.details = details


class NotPermitted(DomainError):
    """The person's role does not allow this action (checked in the service, not only the page)."""

    code = "not_permitted"
    http_status = status.HTTP_403_FORBIDDEN


class RateLimited(DomainError):
    """Past a request limit: ``retry_after`` seconds until the next try goes through."""

    code = "rate_limited"
    http_status = status.HTTP_429_TOO_MANY_REQUESTS

    def __init__(self, message: str, *, retry_after: int, **details: Any) -> None:
        super().__init__(message, retry_after=retry_after, **details)
        self.retry_after = retry_after


class ReasonRequired(DomainError):
    """An action that goes on a timeline or the audit trail was asked for without a reason."""

    code = "reason_required"


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """Render every error as ``{"code", "message", "details"}``."""
    if isinstance(exc, DomainError):
        retry_after = getattr(exc, "retry_after", None) or getattr(exc, "seconds_left", None)
        return Response(
            {"code": exc.code, "message": exc.message, "details": exc.details},
            status=exc.http_status,
            headers={"Retry-After": str(retry_after)} if retry_after else None,
        )
    if isinstance(exc, ValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        )
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.APIException):
        details = response.data if isinstance(exc, exceptions.ValidationError) else {}
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else "invalid"
        message = (
            str(exc.detail) if not isinstance(exc, exceptions.ValidationError) else "Invalid input."
        )
        response.data = {"code": code, "message": message, "details": details}
    return response
