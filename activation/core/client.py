"""The client for the core credit system (see shared/core-credit-api.md)."""

import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.conf import settings

from portal import instruments
from portal.http import tls_context

logger = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    ACTIVATED = "activated"  # 201, a 200 replay of one, or 409 already_active
    PENDING = "pending"  # 202, or a 200 replay of one
    REJECTED = "rejected"  # 422: the core refuses for good
    KEY_REUSED = "key_reused"  # 409 idempotency_key_reused: a portal bug, never retried
    BUSY = "busy"  # 429: retry after Retry-After, no sooner
    UNAVAILABLE = "unavailable"  # 5xx, timeout, connection error: outcome unknown, retry


RETRYABLE = frozenset({Outcome.BUSY, Outcome.UNAVAILABLE})


@dataclass(frozen=True)
class ActivationResult:
    outcome: Outcome
    status_code: int | None = None
    body: dict[str, Any] = field(default_factory=dict)
    retry_after_seconds: float | None = None
    error: str = ""

    @property
    def version(self) -> int | None:
        version = self.body.get("version")
        return version if isinstance(version, int) else None

    @property
    def reason(self) -> str:
        return str(self.body.get("reason") or self.body.get("error") or "")


@dataclass(frozen=True)
class CreditLineStatus:
    reference: str
    status: str
    version: int
    activation_id: str


class CoreUnavailable(Exception):
    """A read from the core failed; the caller tries again later."""


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(float(response.headers.get("Retry-After", "1")), 0.0)
    except ValueError:
        return 1.0


def classify_activation_response(response: httpx.Response) -> ActivationResult:
    """Turn one HTTP answer to ``POST /v1/activations`` into what the portal should do."""
    body = _json_object(response)
    status = response.status_code

    def result(outcome: Outcome, **extra: Any) -> ActivationResult:
        return ActivationResult(outcome, status_code=status, body=body, **extra)

    if status in (200, 201, 202):
        core_status = body.get("status")
        if core_status == "active":
            return result(Outcome.ACTIVATED)
        if core_status == "pending":
            return result(Outcome.PENDING)
        return result(Outcome.UNAVAILABLE, error=f"unexpected body for {status}: {body!r:.200}")
    if status == 409:
        if body.get("error") == "already_active":
            return result(Outcome.ACTIVATED)
        return result(Outcome.KEY_REUSED, error=str(body.get("error", "conflict")))
    if status == 422:
        return result(Outcome.REJECTED, error=str(body.get("reason", "rejected")))
    if status == 429:
        return result(Outcome.BUSY, retry_after_seconds=_retry_after(response), error="busy")
    return result(Outcome.UNAVAILABLE, error=f"HTTP {status}")


class CoreClient:
    """Talks to the core over HTTP with explicit timeouts; never raises for an activation."""

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        connect_timeout: float,
        read_timeout: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=transport,
            verify=tls_context(),
        )

    @classmethod
    def from_settings(cls) -> "CoreClient":
        return cls(
            base_url=settings.CORE_API_URL,
            token=settings.CORE_API_TOKEN,
            connect_timeout=settings.CORE_CONNECT_TIMEOUT_SECONDS,
            read_timeout=settings.CORE_READ_TIMEOUT_SECONDS,
        )

    def __enter__(self) -> "CoreClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send one request, counting it by status class and timing it, answered or not."""
        started = time.perf_counter()
        outcome = "connection_error"
        try:
            response = self._http.request(method, url, **kwargs)
            outcome = instruments.status_class(response.status_code)
            return response
        except httpx.TimeoutException:
            outcome = "timeout"
            raise
        finally:
            instruments.core_requests.labels(outcome).inc()
            instruments.core_request_duration.observe(time.perf_counter() - started)

    def activate(self, *, payload: dict[str, Any], idempotency_key: str) -> ActivationResult:
        """Ask the core to activate a credit line; the key makes retries safe."""
        try:
            response = self._request(
                "POST",
                "/v1/activations",
                json=payload,
                headers={"Idempotency-Key": idempotency_key},
            )
        except httpx.TimeoutException as error:
            return ActivationResult(Outcome.UNAVAILABLE, error=f"timeout: {type(error).__name__}")
        except httpx.HTTPError as error:
            return ActivationResult(Outcome.UNAVAILABLE, error=f"{type(error).__name__}: {error}")
        return classify_activation_response(response)

    def get_credit_line(self, reference: str) -> CreditLineStatus | None:
        """Read a line's status from the core; None if the core does not know it."""
        try:
            response = self._request("GET", f"/v1/credit-lines/{reference}")
        except httpx.HTTPError as error:
            raise CoreUnavailable(f"{type(error).__name__}: {error}") from error
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise CoreUnavailable(f"HTTP {response.status_code}")
        body = _json_object(response)
        try:
            return CreditLineStatus(
                reference=str(body["credit_line_ref"]),
                status=str(body["status"]),
                version=int(body["version"]),
                activation_id=str(body.get("activation_id") or ""),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CoreUnavailable(f"malformed credit line: {body!r:.200}") from error
