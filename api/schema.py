"""What drf-spectacular needs beyond the views: our two bearer schemes, the one error envelope,
and the core's callback described as a webhook (it is the core's API to us, not ours to clients).

Imported by ``ApiConfig.ready`` so the extensions are registered before a schema is generated.
"""

from typing import Any

from django.utils.translation import gettext_lazy as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import (
    OpenApiResponse,
    OpenApiWebhook,
    extend_schema,
    extend_schema_field,
    inline_serializer,
)
from rest_framework import serializers

from activation.services.core_updates import CORE_CALLBACK_TYPES

CORE_CALLBACK_PATH = "/api/v1/core/events/"


class AppAccessTokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.AppAccessTokenAuthentication"
    name = "appAccessToken"
    # Above drf-spectacular's own scheme for simplejwt's JWTAuthentication, our base class.
    priority = 1

    def get_security_definition(self, auto_schema) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": str(
                _(
                    "The app's short-lived access token (a JWT) from POST /api/v1/auth/token/, "
                    "bound to one signed-in installation; refresh it before it expires."
                )
            ),
        }


class StaffTokenScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.StaffTokenAuthentication"
    name = "staffToken"

    def get_security_definition(self, auto_schema) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "ars_<prefix>_<secret>",
            "description": str(
                _(
                    "A named, scoped, expiring staff token created in the back office "
                    "(API tokens); every use is attributed to the staff member who made it."
                )
            ),
        }


@extend_schema_field(
    {
        "oneOf": [
            {"type": "object", "additionalProperties": {}},
            {"type": "array", "items": {}},
        ],
        "description": "Per-field errors for invalid input, or facts about the error.",
    }
)
class ErrorDetailsField(serializers.JSONField):
    pass


class ErrorSerializer(serializers.Serializer):
    """Every error the API answers: ``{"code", "message", "details"}``."""

    code = serializers.CharField(help_text=_("Stable and machine-readable, e.g. `rate_limited`."))
    message = serializers.CharField(help_text=_("For people, in the request's language."))
    details = ErrorDetailsField()

    class Meta:
        ref_name = "Error"


ERROR_DESCRIPTIONS = {
    400: _("Invalid input (`details` names the fields), or a refused request."),
    401: _("No valid token: sign in again or refresh the access token."),
    403: _("The token does not allow this."),
    404: _("Not found, or not yours."),
    409: _("Conflicts with the current state or a used Idempotency-Key."),
    422: _("Refused by a business rule."),
    429: _("Too many requests: retry after `Retry-After` seconds."),
}


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """The error envelope for each status, ready for ``extend_schema(responses={...})``.

    ``error_responses(400, 401, 429)``; with no statuses, 400, 401 and 403.
    """
    return {
        code: OpenApiResponse(ErrorSerializer, description=str(ERROR_DESCRIPTIONS.get(code, "")))
        for code in statuses or (400, 401, 403)
    }


class CoreEventDataSerializer(serializers.Serializer):
    activation_id = serializers.CharField(allow_null=True, required=False)
    credit_line_ref = serializers.CharField()
    status = serializers.CharField(allow_null=True, required=False)
    reason = serializers.CharField(allow_null=True, required=False)
    version = serializers.IntegerField(min_value=0, allow_null=True, required=False)

    class Meta:
        ref_name = "CoreEventData"


class CoreEventSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The event's id, also sent as the `webhook-id` header.")
    type = serializers.ChoiceField(choices=sorted(CORE_CALLBACK_TYPES))
    created_at = serializers.DateTimeField()
    data = CoreEventDataSerializer()

    class Meta:
        ref_name = "CoreEvent"


core_event_webhook = OpenApiWebhook(
    name="coreEvent",
    decorator=extend_schema(
        summary="The core reports the outcome of a pending activation",
        description=(
            f"The core credit system sends `POST {CORE_CALLBACK_PATH}` when an activation it "
            "answered `202 pending` finishes. Signed the Standard Webhooks way: headers "
            "`webhook-id`, `webhook-timestamp` (Unix seconds, within 5 minutes of now) and "
            '`webhook-signature` (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, '
            "space-separated during key rotation) with the secret `CORE_WEBHOOK_SECRET`. "
            "Delivery is at least once, in any order: a callback already processed is answered "
            "200 `duplicate`, an older version than one seen is ignored."
        ),
        request=CoreEventSerializer,
        responses={
            200: OpenApiResponse(
                inline_serializer(
                    "CoreEventAccepted",
                    {"status": serializers.ChoiceField(["applied", "duplicate", "ignored"])},
                ),
                description="Accepted (or accepted before).",
            ),
            400: OpenApiResponse(
                ErrorSerializer, description="Signed, but not an event the portal can take."
            ),
            401: OpenApiResponse(
                ErrorSerializer, description="Missing, malformed or wrong signature or timestamp."
            ),
        },
    ),
)


def exclude_core_callback(endpoints: list[tuple], **_kwargs: Any) -> list[tuple]:
    """Preprocessing hook: leave the core's callback out of the paths (it is a webhook)."""
    return [endpoint for endpoint in endpoints if endpoint[0] != CORE_CALLBACK_PATH]


ERROR_COMPONENT = {
    "type": "object",
    "description": 'Every error the API answers: ``{"code", "message", "details"}``.',
    "properties": {
        "code": {
            "type": "string",
            "minLength": 1,
            "description": "Stable and machine-readable, e.g. `rate_limited`.",
        },
        "message": {
            "type": "string",
            "minLength": 1,
            "description": "For people, in the request's language.",
        },
        "details": {
            "oneOf": [
                {"type": "object", "additionalProperties": {}},
                {"type": "array", "items": {}},
            ],
            "description": "Per-field errors for invalid input, or facts about the error.",
        },
    },
    "required": ["code", "details", "message"],
}


def add_error_envelope(result: dict[str, Any], **_kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: every operation's other answers are errors in the one envelope.

    An operation lists the errors a client should act on (``error_responses``); any other
    status (a 401 of an expired token, a 429, a 404) still comes as ``Error``, documented once
    as the operation's ``default`` response.
    """
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("Error", ERROR_COMPONENT)
    default = {
        "description": "An error: `code` says which.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                operation["responses"].setdefault("default", default)
    return result
