"""The core's callbacks, verified the Standard Webhooks way."""

import json
from typing import Any

from django.conf import settings
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from activation import services
from activation.errors import InvalidCoreEvent, InvalidCoreSignature
from activation.models import CoreCallback, CreditLine
from activation.services.core_updates import CORE_CALLBACK_TYPES
from portal import instruments
from portal.json_checks import unstorable_json

BIGINT_MAX = 2**63 - 1  # PostgreSQL's bigint, where a line keeps the last version it saw


def _max_length(model, field: str) -> int:
    return model._meta.get_field(field).max_length


class JsonIntegerField(serializers.IntegerField):
    """A JSON integer: not a string of digits, a float or a boolean."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StoredCharField(serializers.CharField):
    """A string checked exactly as the portal stores and looks it up: never trimmed.

    DRF trims by default, but the service reads the raw payload: a value padded with spaces
    would pass the length check here and then overflow its column (a 500), or be looked up
    with the spaces it was validated without.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)


class CoreEventDataSerializer(serializers.Serializer):
    """A callback's ``data``: every field the portal stores must fit where it is stored."""

    credit_line_ref = StoredCharField(
        max_length=_max_length(CreditLine, "reference"), required=False
    )
    activation_id = StoredCharField(
        max_length=_max_length(CreditLine, "core_activation_id"),
        required=False,
        allow_null=True,
        allow_blank=True,
    )
    status = StoredCharField(
        max_length=_max_length(CreditLine, "status"),
        required=False,
        allow_null=True,
        allow_blank=True,
    )
    reason = StoredCharField(max_length=200, required=False, allow_null=True, allow_blank=True)
    version = JsonIntegerField(min_value=0, max_value=BIGINT_MAX, required=False, allow_null=True)


class CoreEventsView(APIView):
    """Accept the core's callbacks: ``activation.succeeded`` and ``activation.failed``.

    What the database could not hold is refused with 400 and the reason, never a 500, which
    the core would retry for ever. A type the contract does not define is recorded, not applied.
    """

    authentication_classes: list = []
    permission_classes = [AllowAny]

    class InputSerializer(serializers.Serializer):
        webhook_id = StoredCharField(max_length=_max_length(CoreCallback, "webhook_id"))
        type = StoredCharField(max_length=_max_length(CoreCallback, "event_type"))
        data = CoreEventDataSerializer()

        def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
            problem = unstorable_json(self.initial_data)
            if problem:
                raise serializers.ValidationError(problem)
            # The types the contract defines each change one line, which they must name.
            if attrs["type"] in CORE_CALLBACK_TYPES and not attrs["data"].get("credit_line_ref"):
                raise serializers.ValidationError({"data": {"credit_line_ref": ["Required."]}})
            return attrs

    def post(self, request: Request) -> Response:
        body = request.body
        try:
            # The body is parsed here, not by Webhook.verify: its json.loads lets a deeply
            # nested body's RecursionError out, which would answer 500.
            Webhook(settings.CORE_WEBHOOK_SECRET).verify(
                body, dict(request.headers), json_parse=False
            )
        except (WebhookVerificationError, ValueError) as error:
            # ValueError covers a malformed signature, bad base64 or a non-UTF-8 body.
            instruments.callbacks.labels(_rejection(error)).inc()
            raise InvalidCoreSignature(str(error) or "Invalid signature.") from error
        try:
            payload, event = self._event(request)
        except InvalidCoreEvent:
            instruments.callbacks.labels("malformed").inc()
            raise
        outcome = services.record_core_callback(
            webhook_id=event.validated_data["webhook_id"], payload=payload
        )
        instruments.callbacks.labels("duplicate" if outcome == "duplicate" else "accepted").inc()
        return Response({"status": outcome})

    def _event(self, request: Request) -> tuple[dict[str, Any], serializers.Serializer]:
        """The verified body, parsed and validated; raise ``InvalidCoreEvent`` if it is not."""
        try:
            payload = json.loads(request.body.decode("utf-8"))  # verified as UTF-8 above
        except (ValueError, RecursionError) as error:
            raise InvalidCoreEvent(
                non_field_errors=["Not JSON, or nested too deep to read."]
            ) from error
        if not isinstance(payload, dict):
            raise InvalidCoreEvent(non_field_errors=["Expected an event object."])
        event = self.InputSerializer(data={**payload, "webhook_id": request.headers["webhook-id"]})
        if not event.is_valid():
            raise InvalidCoreEvent(**event.errors)
        return payload, event


def _rejection(error: Exception) -> str:
    """Why a callback failed verification, as counted: a stale or future timestamp, or else
    the signature (or its headers)."""
    if isinstance(error, WebhookVerificationError) and "timestamp" in str(error).lower():
        return "timestamp"
    return "signature"
