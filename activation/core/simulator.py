"""An in-memory core credit system that follows shared/core-credit-api.md, with failure knobs.

It serves ``POST /v1/activations``, ``GET /v1/credit-lines/{ref}``, sends signed callbacks for
pending activations, and exposes ``GET /_sim/stats`` (how many activations each line received:
more than one is a bug in the portal), ``POST /_sim/config`` (change knobs at run time) and
``POST /_sim/reset``. It knows no Django: tests and ``run_core_simulator`` start it alike.
"""

import hashlib
import json
import logging
import random
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from portal.http import tls_context

logger = logging.getLogger(__name__)

# Outcomes a test can force, one per request, in order, through the ``script`` knob.
SCRIPTED_OUTCOMES = frozenset({"error", "timeout", "busy", "reject", "pending", "active"})


@dataclass
class SimulatorConfig:
    down: bool = False  # answer every activation and read with 503, as during an outage
    error_rate: float = 0.0  # share of 503 answers, activation not performed
    timeout_rate: float = 0.0  # share performed but answered only after ``timeout_seconds``
    timeout_seconds: float = 10.0
    latency_ms: int = 0  # added to every answer
    pending_rate: float = 0.0  # share answered 202, confirmed later by callback
    reject_rate: float = 0.0  # share refused with 422
    reject_reason: str = "kyc_expired"
    capacity: int = 0  # concurrent requests above which it answers 429 (0: unlimited)
    retry_after_seconds: int = 1
    callback_url: str = ""
    callback_delay_seconds: float = 1.0
    callback_loss_rate: float = 0.0
    callback_duplicate_rate: float = 0.0
    callback_reorder_rate: float = 0.0  # share of callbacks sent with a stale failure after them
    script: list[str] = field(default_factory=list)

    def update(self, values: dict[str, Any]) -> None:
        known = {f.name: f.type for f in fields(self)}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown knob {name!r}")
            if name == "script":
                if not isinstance(value, list) or not set(value) <= SCRIPTED_OUTCOMES:
                    raise ValueError(f"script takes a list of {sorted(SCRIPTED_OUTCOMES)}")
                self.script = list(value)
            elif isinstance(getattr(self, name), bool):
                setattr(self, name, value in (True, "true", "1", 1))
            else:
                setattr(self, name, type(getattr(self, name))(value))


@dataclass
class Line:
    status: str = "inactive"
    version: int = 0
    activation_id: str = ""
    updated_at: str = ""


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class CoreSimulator:
    """The simulator's state; thread-safe, shared by every request handler thread."""

    def __init__(self, *, token: str, webhook_secret: str, config: SimulatorConfig) -> None:
        self.token = token
        self.webhook = Webhook(webhook_secret)
        self.config = config
        self.lock = threading.Lock()
        self.lines: dict[str, Line] = {}
        self.keys: dict[str, tuple[str, int, dict[str, Any]]] = {}
        self.activations: dict[str, int] = {}
        self.requests = 0
        self.requests_by_key: dict[str, int] = {}
        self.in_flight = 0
        self.callbacks_sent = 0
        self.turned_away = 0  # answered 429 because more than ``capacity`` were in flight

    def reset(self) -> None:
        with self.lock:
            self.lines.clear()
            self.keys.clear()
            self.activations.clear()
            self.requests_by_key.clear()
            self.requests = self.callbacks_sent = self.turned_away = 0

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "activations": dict(self.activations),
                "lines": {ref: asdict(line) for ref, line in self.lines.items()},
                "requests": self.requests,
                "requests_by_key": dict(self.requests_by_key),
                "callbacks_sent": self.callbacks_sent,
                "turned_away": self.turned_away,
                "config": asdict(self.config),
            }

    def _draw(self) -> str:
        """Pick this request's fate: the next scripted outcome, or a random one by the rates."""
        config = self.config
        if config.script:
            return config.script.pop(0)
        roll = random.random()
        for outcome, rate in (
            ("error", config.error_rate),
            ("timeout", config.timeout_rate),
            ("reject", config.reject_rate),
            ("pending", config.pending_rate),
        ):
            if roll < rate:
                return outcome
            roll -= rate
        return "active"

    def _bump(self, reference: str, status: str) -> Line:
        line = self.lines.setdefault(reference, Line())
        line.status = status
        line.version += 1
        line.updated_at = _now_iso()
        return line

    def activate(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
        """Answer one activation request: ``(status, body, seconds to wait before answering)``."""
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        reference = str(body.get("credit_line_ref", ""))
        if not reference:
            return 400, {"error": "invalid_request", "detail": "credit_line_ref is required"}, 0
        with self.lock:
            self.requests += 1
            self.requests_by_key[key] = self.requests_by_key.get(key, 0) + 1
            fate = "error" if self.config.down else self._draw()
            if fate == "error":
                return 503, {"error": "unavailable"}, 0
            if fate == "busy":
                return 429, {"error": "busy"}, 0
            if key in self.keys:
                stored_digest, status, stored = self.keys[key]
                if stored_digest != digest:
                    return 409, {"error": "idempotency_key_reused"}, 0
                return (200 if status in (201, 202) else status), stored, 0
            line = self.lines.setdefault(reference, Line())
            if line.status == "active":
                answer = (
                    409,
                    {
                        "error": "already_active",
                        "activation_id": line.activation_id,
                        "version": line.version,
                    },
                )
            elif fate == "reject":
                answer = (
                    422,
                    {"error": "rejected", "reason": self.config.reject_reason, "retryable": False},
                )
            else:
                self.activations[reference] = self.activations.get(reference, 0) + 1
                line.activation_id = f"act_{uuid.uuid4().hex[:16]}"
                pending = fate == "pending"
                line = self._bump(reference, "pending" if pending else "active")
                answer = (
                    202 if pending else 201,
                    {
                        "activation_id": line.activation_id,
                        "credit_line_ref": reference,
                        "status": line.status,
                        "version": line.version,
                        **({} if pending else {"activated_at": line.updated_at}),
                    },
                )
                if pending:
                    self._schedule_confirmation(reference)
            status, response = answer
            self.keys[key] = (digest, status, response)
        wait = self.config.timeout_seconds if fate == "timeout" else 0
        return status, response, wait

    def credit_line(self, reference: str) -> dict[str, Any]:
        with self.lock:
            line = self.lines.setdefault(reference, Line(updated_at=_now_iso()))
            return {
                "credit_line_ref": reference,
                "status": line.status,
                "activation_id": line.activation_id or None,
                "updated_at": line.updated_at,
                "version": line.version,
            }

    # --- callbacks ---------------------------------------------------------------------------

    def _schedule_confirmation(self, reference: str) -> None:
        timer = threading.Timer(self.config.callback_delay_seconds, self._confirm, (reference,))
        timer.daemon = True
        timer.start()

    def _confirm(self, reference: str) -> None:
        with self.lock:
            line = self._bump(reference, "active")
            data = {
                "activation_id": line.activation_id,
                "credit_line_ref": reference,
                "status": "active",
                "reason": None,
                "version": line.version,
            }
            config = self.config
        if not config.callback_url or random.random() < config.callback_loss_rate:
            return  # lost: the portal must find out by polling
        events = [("activation.succeeded", data)]
        if random.random() < config.callback_duplicate_rate:
            events.append(events[0])
        if random.random() < config.callback_reorder_rate:
            stale = {
                **data,
                "status": "inactive",
                "reason": "timeout",
                "version": data["version"] - 1,
            }
            events.append(("activation.failed", stale))
        for event_type, event_data in events:
            self._send_callback(config.callback_url, event_type, event_data)

    def _send_callback(self, url: str, event_type: str, data: dict[str, Any]) -> None:
        message_id = (
            f"msg_{hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]}"
        )
        body = json.dumps(
            {
                "id": f"evt_{uuid.uuid4().hex}",
                "type": event_type,
                "created_at": _now_iso(),
                "data": data,
            }
        )
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.webhook.sign(message_id, now, body),
        }
        try:
            response = httpx.post(
                url, content=body, headers=headers, timeout=5, verify=tls_context()
            )
            logger.info(
                "callback %s for %s: HTTP %s",
                event_type,
                data["credit_line_ref"],
                response.status_code,
            )
        except httpx.HTTPError as error:
            logger.warning("callback %s to %s failed: %s", event_type, url, error)
        with self.lock:
            self.callbacks_sent += 1


def _handler_for(simulator: CoreSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(raw)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length) or b"{}")

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") == f"Bearer {simulator.token}":
                return True
            self._send(401, {"error": "unauthorized"})
            return False

        def do_GET(self) -> None:
            if self.path == "/_sim/stats":
                return self._send(200, simulator.stats())
            if self.path.startswith("/v1/credit-lines/"):
                if simulator.config.down:
                    return self._send(503, {"error": "unavailable"})
                if self._authorised():
                    reference = self.path.removeprefix("/v1/credit-lines/")
                    self._send(200, simulator.credit_line(reference))
                return None
            return self._send(404, {"error": "not_found"})

        def do_POST(self) -> None:
            try:
                body = self._body()
            except ValueError:
                return self._send(400, {"error": "invalid_json"})
            if self.path == "/_sim/config":
                try:
                    simulator.config.update(body)
                except (TypeError, ValueError) as error:
                    return self._send(400, {"error": str(error)})
                return self._send(200, asdict(simulator.config))
            if self.path == "/_sim/reset":
                simulator.reset()
                return self._send(200, {"status": "reset"})
            if self.path != "/v1/activations":
                return self._send(404, {"error": "not_found"})
            if not self._authorised():
                return None
            key = self.headers.get("Idempotency-Key", "")
            if not key:
                return self._send(400, {"error": "idempotency_key_required"})
            capacity = simulator.config.capacity
            with simulator.lock:
                simulator.in_flight += 1
                overloaded = capacity and simulator.in_flight > capacity
                simulator.turned_away += bool(overloaded)
            try:
                time.sleep(simulator.config.latency_ms / 1000)
                if overloaded:
                    retry_after = str(simulator.config.retry_after_seconds)
                    return self._send(429, {"error": "busy"}, {"Retry-After": retry_after})
                status, response, wait = simulator.activate(
                    key, body if isinstance(body, dict) else {}
                )
                time.sleep(wait)
                headers = (
                    {"Retry-After": str(simulator.config.retry_after_seconds)}
                    if status == 429
                    else None
                )
                return self._send(status, response, headers)
            finally:
                with simulator.lock:
                    simulator.in_flight -= 1

    return Handler


def make_server(
    *, host: str, port: int, token: str, webhook_secret: str, config: SimulatorConfig
) -> tuple[ThreadingHTTPServer, CoreSimulator]:
    """Build (but do not start) a simulator server; ``serve_forever()`` runs it."""
    simulator = CoreSimulator(token=token, webhook_secret=webhook_secret, config=config)
    server = ThreadingHTTPServer((host, port), _handler_for(simulator))
    server.daemon_threads = True
    return server, simulator
