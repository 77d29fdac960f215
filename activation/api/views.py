"""The core's callbacks, verified the Standard Webhooks way."""

from django.conf import settings
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from activation import services


class CoreEventsView(APIView):
    """Accept ``activation.succeeded`` / ``activation.failed`` callbacks from the core."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        body = request.body
        try:
            payload = Webhook(settings.CORE_WEBHOOK_SECRET).verify(body, dict(request.headers))
        except (WebhookVerificationError, ValueError) as error:
            # ValueError covers a malformed signature, bad base64, non-UTF-8 or non-JSON body.
            return Response(
                {
                    "code": "invalid_signature",
                    "message": str(error) or "Invalid signature.",
                    "details": {},
                },
                status=status.HTTP_401_UNAUTHORIZED,
            )
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
            return Response(
                {
                    "code": "invalid_payload",
                    "message": "Expected an event with a data object.",
                    "details": {},
                },
                status=status.HTTP_400_BAD_REQUEST,
            )
        applied = services.record_core_callback(
            webhook_id=request.headers["webhook-id"], payload=payload
        )
        return Response({"status": "applied" if applied else "duplicate"})
