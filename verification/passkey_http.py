"""The JSON a page's script fetches before asking the browser for a passkey."""

from collections.abc import Callable
from typing import Any

from django.http import JsonResponse

from portal.errors import DomainError


def options_response(build: Callable[[], dict[str, Any]]) -> JsonResponse:
    """``{"options": …}`` for ``navigator.credentials``, or the API's error envelope."""
    try:
        options = build()
    except DomainError as error:
        return error_response(error)
    return JsonResponse({"options": options}, headers={"Cache-Control": "no-store"})


def error_response(error: DomainError) -> JsonResponse:
    """The API's error envelope (``portal.errors``) for a page's script."""
    return JsonResponse(
        {"code": error.code, "message": str(error.message), "details": error.details},
        status=error.http_status,
        headers={"Cache-Control": "no-store"},
    )
