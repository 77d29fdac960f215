"""Pluggable SMS delivery, chosen by ``SMS_BACKEND`` like Django's e-mail backends."""

import fcntl
import json
import logging
import sys
import uuid
from pathlib import Path

import httpx
from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import import_string

from portal import instruments
from portal.breaker import sms_gateway_breaker
from portal.http import tls_context

logger = logging.getLogger(__name__)


class SmsDeliveryError(Exception):
    """The message could not be handed to the gateway."""


class GatewayUnhealthy(SmsDeliveryError):
    """The gateway could not be reached, timed out or failed on its side, every time we asked."""


class GatewayCircuitOpen(SmsDeliveryError):
    """The gateway kept failing, so the message was not even tried (the breaker is open)."""


class BaseBackend:
    def send(self, *, to: str, body: str) -> None:
        raise NotImplementedError


class ConsoleBackend(BaseBackend):
    """Print each message; for development."""

    def send(self, *, to: str, body: str) -> None:
        sys.stdout.write(f"SMS to {to}: {body}\n")
        sys.stdout.flush()


class FileBackend(BaseBackend):
    """Append each message as one JSON line to ``SMS_FILE_PATH``; for the demo and tests."""

    def send(self, *, to: str, body: str) -> None:
        path = Path(settings.SMS_FILE_PATH)
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {"to": to, "body": body, "sent_at": timezone.now().isoformat()}, ensure_ascii=False
        )
        with path.open("a", encoding="utf-8") as handle:
            # Several processes append at once: a lock keeps every line whole.
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(line + "\n")


class LocmemBackend(BaseBackend):
    """Keep messages in ``LocmemBackend.outbox``; for tests."""

    outbox: list[dict[str, str]] = []

    def send(self, *, to: str, body: str) -> None:
        self.outbox.append({"to": to, "body": body})


def send_sms(*, to: str, body: str) -> None:
    """Send one message through the configured backend."""
    backend = import_string(settings.SMS_BACKEND)()
    name = type(backend).__name__
    try:
        backend.send(to=to, body=body)
    except (SmsDeliveryError, OSError) as error:
        instruments.sms_sends.labels(name, _failure_label(error)).inc()
        raise
    instruments.sms_sends.labels(name, "ok").inc()
    logger.info("SMS sent to ***%s through %s", to[-4:], name)


def _failure_label(error: Exception) -> str:
    return "breaker_open" if isinstance(error, GatewayCircuitOpen) else "failed"


class HttpGatewayBackend(BaseBackend):
    """POST each message as JSON to ``SMS_GATEWAY_URL``; retry timeouts and 5xx, not 4xx.

    A gateway that keeps failing trips a circuit breaker shared by every process: until it
    recovers, sends fail at once instead of each holding a request for the whole timeout.
    """

    def send(self, *, to: str, body: str) -> None:
        breaker = sms_gateway_breaker()
        if not breaker.allow():
            raise GatewayCircuitOpen("the SMS gateway keeps failing; not tried (circuit open)")
        try:
            self._send(to=to, body=body)
        except GatewayUnhealthy:
            breaker.record_failure()
            raise
        except SmsDeliveryError:
            breaker.record_success()  # the gateway answered; it refused this one message
            raise
        breaker.record_success()

    def _send(self, *, to: str, body: str) -> None:
        message_id = str(uuid.uuid4())  # lets a gateway drop the duplicate of a retried send
        timeout = httpx.Timeout(
            settings.SMS_GATEWAY_READ_TIMEOUT_SECONDS,
            connect=settings.SMS_GATEWAY_CONNECT_TIMEOUT_SECONDS,
        )
        headers = {
            "Authorization": f"Bearer {settings.SMS_GATEWAY_TOKEN}",
            "Idempotency-Key": message_id,
        }
        problem = ""
        with httpx.Client(timeout=timeout, headers=headers, verify=tls_context()) as client:
            for _attempt in range(settings.SMS_GATEWAY_RETRIES + 1):
                try:
                    response = client.post(settings.SMS_GATEWAY_URL, json={"to": to, "body": body})
                except httpx.HTTPError as error:
                    problem = f"{type(error).__name__}: {error}"
                    continue
                if response.is_success:
                    return
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code < 500 and response.status_code != 429:
                    # The gateway refuses this message; asking again will not help.
                    raise SmsDeliveryError(problem)
        raise GatewayUnhealthy(problem)
