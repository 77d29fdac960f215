"""The code paths' counters and histograms, driven through the real views, services and tasks."""

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pgtrigger
import pytest
from celery import shared_task
from django.db import connection
from django.urls import reverse
from prometheus_client import REGISTRY

from activation.core.client import CoreClient, CoreUnavailable
from activation.integrity import verify_and_record
from activation.models import CaseEvent
from activation.tests.test_callbacks import signed_headers
from portal.breaker import sms_gateway_breaker
from portal.tasks import stamp_worker_heartbeat
from tests.factories import open_failed_case
from tests.fixtures import last_sms_code
from verification.sms import SmsDeliveryError, send_sms

from .test_metrics import TOKEN, samples, scrape

pytestmark = pytest.mark.django_db

CALLBACK_URL = "/api/v1/core/events/"


class Counts:
    """Samples of the default registry, read before a step, to compare with after it."""

    def __init__(self, *wanted: tuple[str, dict[str, str]]) -> None:
        self.wanted = wanted
        self.before = [self._read(name, labels) for name, labels in wanted]

    @staticmethod
    def _read(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(f"activation_rescue_{name}", labels) or 0.0

    def increases(self) -> list[float]:
        return [
            self._read(name, labels) - before
            for (name, labels), before in zip(self.wanted, self.before, strict=True)
        ]


def code_request(result: str, channel: str = "sms"):
    return "code_requests_total", {"channel": channel, "result": result}


def code_submit(result: str, channel: str = "sms"):
    return "code_submits_total", {"channel": channel, "result": result}


def transition_to(state: str, reason: str = ""):
    return "case_transitions_total", {"to_state": state, "reason": reason}


def sms_send(result: str, backend: str):
    return "sms_sends_total", {"backend": backend, "result": result}


class RefusingBackend:
    """An SMS backend whose gateway refuses every message."""

    def send(self, *, to: str, body: str) -> None:
        raise SmsDeliveryError("HTTP 400: refused")


def send(client, case, channel="sms"):
    return client.post(
        reverse("activation:retry", args=[case.pk]), {"action": "send", "channel": channel}
    )


def verify(client, case, code):
    data = {"action": "verify", "code": code, "submission_id": str(uuid.uuid4())}
    return client.post(reverse("activation:retry", args=[case.pk]), data)


def test_a_sent_code_and_a_resend_too_soon_are_counted_with_the_sms_and_the_risk_decision(
    signed_in, customer
):
    case = open_failed_case(customer)
    counts = Counts(
        code_request("sent"),
        code_request("too_soon"),
        sms_send("ok", "LocmemBackend"),
        transition_to("pending_verification"),
        ("risk_decisions_total", {"decision": "allow", "moment": "code_request"}),
    )

    send(signed_in, case)
    send(signed_in, case)  # inside the cooldown: refused

    assert counts.increases() == [1, 1, 1, 1, 2]


def test_a_code_the_gateway_refuses_counts_a_failed_request_send_and_transition(
    signed_in, customer, settings
):
    settings.SMS_BACKEND = f"{__name__}.RefusingBackend"
    case = open_failed_case(customer)
    counts = Counts(
        code_request("delivery_failed"),
        code_request("sent"),
        sms_send("failed", "RefusingBackend"),
        transition_to("failed", "delivery_failed"),
    )

    assert send(signed_in, case).status_code == 302

    assert counts.increases() == [1, 0, 1, 1]


def test_a_wrong_then_a_right_code_are_counted_by_their_result(signed_in, customer, time_machine):
    time_machine.move_to(datetime.now(UTC), tick=False)
    case = open_failed_case(customer)
    send(signed_in, case)
    wrong = f"{(int(last_sms_code()) + 1) % 1_000_000:06d}"
    counts = Counts(
        code_submit("code_invalid"),
        code_submit("throttled"),
        code_submit("ok"),
        transition_to("submitting"),
        ("risk_decisions_total", {"decision": "allow", "moment": "code_submit"}),
    )

    verify(signed_in, case, wrong)
    verify(signed_in, case, last_sms_code())  # within the throttle's second: refused
    time_machine.shift(10)
    verify(signed_in, case, last_sms_code())

    assert counts.increases() == [1, 1, 1, 1, 3]


def test_a_sms_sent_while_the_gateway_breaker_is_open_is_counted_as_breaker_open(
    settings, customer
):
    settings.SMS_BACKEND = "verification.sms.HttpGatewayBackend"
    breaker = sms_gateway_breaker()
    for _failure in range(10):
        breaker.record_failure()
    assert breaker.state() == "open"
    counts = Counts(sms_send("breaker_open", "HttpGatewayBackend"))

    with pytest.raises(SmsDeliveryError, match="circuit open"):
        send_sms(to="+15550100", body="hello")

    assert counts.increases() == [1]


def _answers(request: httpx.Request) -> httpx.Response:
    answer = request.url.path.rsplit("/", 1)[-1]
    if answer == "timeout":
        raise httpx.ReadTimeout("slow", request=request)
    if answer == "refused":
        raise httpx.ConnectError("refused", request=request)
    status = 201 if answer == "activations" else int(answer)
    return httpx.Response(status, json={"status": "active"})


def test_core_calls_are_counted_by_status_class_and_timed():
    def core_requests(status_class):
        return "core_requests_total", {"status_class": status_class}

    counts = Counts(
        core_requests("2xx"),
        core_requests("4xx"),
        core_requests("5xx"),
        core_requests("timeout"),
        core_requests("connection_error"),
        ("core_request_duration_seconds_count", {}),
    )
    client = CoreClient(
        base_url="http://core.test",
        token="t",
        connect_timeout=1,
        read_timeout=1,
        transport=httpx.MockTransport(_answers),
    )
    with client:
        assert client.activate(payload={}, idempotency_key="k").outcome == "activated"
        assert client.get_credit_line("404") is None
        for answer in ("503", "timeout", "refused"):
            with pytest.raises(CoreUnavailable):
                client.get_credit_line(answer)

    assert counts.increases() == [1, 1, 1, 1, 1, 5]


def callback(client, body: str, headers: dict):
    return client.post(CALLBACK_URL, data=body, content_type="application/json", headers=headers)


def test_callbacks_are_counted_by_outcome(client):
    def outcome(name):
        return "callbacks_total", {"outcome": name}

    counts = Counts(
        *(outcome(name) for name in ("accepted", "duplicate", "signature", "timestamp"))
    )
    malformed = Counts(outcome("malformed"))
    # A type the contract does not define is recorded, not applied: accepted all the same.
    body = json.dumps({"type": "line.renamed", "data": {}})

    assert callback(client, body, signed_headers(body, webhook_id="m1")).status_code == 200
    assert callback(client, body, signed_headers(body, webhook_id="m1")).status_code == 200
    wrong = signed_headers(body, webhook_id="m2", secret="whsec_" + "c2VjcmV0LXdyb25n")
    assert callback(client, body, wrong).status_code == 401
    stale = signed_headers(body, webhook_id="m3", at=datetime.now(UTC) - timedelta(hours=1))
    assert callback(client, body, stale).status_code == 401
    assert callback(client, "[]", signed_headers("[]", webhook_id="m4")).status_code == 400

    assert counts.increases() == [1, 1, 1, 1]
    assert malformed.increases() == [1]


@shared_task(bind=True, max_retries=1)
def _retried_once(self) -> str:
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return "done"


@shared_task
def _failing() -> None:
    raise RuntimeError("boom")


def test_celery_tasks_are_counted_by_outcome_and_timed():
    def task(name, result):
        return "celery_tasks_total", {"task": name, "outcome": result}

    heartbeat, retried, failing = stamp_worker_heartbeat.name, _retried_once.name, _failing.name
    counts = Counts(
        task(heartbeat, "success"),
        task(retried, "retry"),
        task(retried, "success"),
        task(failing, "failure"),
        ("celery_task_duration_seconds_count", {"task": heartbeat}),
    )

    stamp_worker_heartbeat.delay()
    _retried_once.apply(throw=False)
    with pytest.raises(RuntimeError):
        _failing.delay()

    assert counts.increases() == [1, 1, 1, 1, 1]


def test_requests_are_counted_by_url_name_never_by_path(client):
    def request(view, method, status):
        return "http_requests_total", {"view": view, "method": method, "status": status}

    counts = Counts(
        request("healthz", "GET", "200"),
        request("unmatched", "GET", "404"),
        request("unmatched", "other", "404"),
        ("http_request_duration_seconds_count", {"view": "healthz"}),
    )

    client.get("/healthz")
    client.get(f"/no-such-page-{uuid.uuid4().hex}")
    client.generic("BREW", f"/coffee-{uuid.uuid4().hex}")

    assert counts.increases() == [1, 1, 1, 1]
    views = {
        sample.labels["view"]
        for metric in REGISTRY.collect()
        if metric.name == "activation_rescue_http_requests"
        for sample in metric.samples
    }
    assert not any("/" in view for view in views)


def test_the_nightly_verification_counts_each_broken_chain(customer):
    open_failed_case(customer)  # an intact chain beside the broken one
    broken = open_failed_case()
    event = CaseEvent.objects.filter(case=broken).order_by("seq").first()
    with pgtrigger.ignore("activation.CaseEvent:append_only"), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE activation_caseevent SET data = %s WHERE id = %s", ['{"x": 1}', event.pk]
        )
    counts = Counts(("audit_chain_breaks_total", {}))

    problems = verify_and_record()

    assert [problem.split(":")[0] for problem in problems] == [f"case {broken.pk}"]
    assert counts.increases() == [1]


def test_the_metrics_page_shows_the_counters_beside_the_gauges(client, settings):
    settings.METRICS_TOKEN = TOKEN
    client.get("/healthz")

    page = scrape(client)

    assert page.status_code == 200
    names = {name for name, _labels in samples(page.content)}
    assert "activation_rescue_http_requests_total" in names
    assert "activation_rescue_http_request_duration_seconds_bucket" in names
    assert "activation_rescue_open_cases" in names  # the gauges are still there
    assert not any(name.startswith(("python_", "process_")) for name in names)


COUNT_IN_A_CHILD = """
from portal import instruments
instruments.callbacks.labels("signature").inc({n})
instruments.http_request_duration.labels("healthz").observe(0.2)
"""


def test_counts_from_several_processes_add_up_in_multiprocess_mode(
    client, settings, tmp_path: Path, monkeypatch
):
    settings.METRICS_TOKEN = TOKEN
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for n in (2, 3):
        subprocess.run(
            [sys.executable, "-c", COUNT_IN_A_CHILD.format(n=n)], env=env, check=True, timeout=60
        )
    client.get("/healthz")  # counted in this process only
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))

    page = samples(scrape(client).content)

    assert page["activation_rescue_callbacks_total", frozenset({("outcome", "signature")})] == 5
    count = "activation_rescue_http_request_duration_seconds_count"
    assert page[count, frozenset({("view", "healthz")})] == 2
    # This process's own counts are not on the page: only what the processes wrote there.
    assert not any(name == "activation_rescue_http_requests_total" for name, _labels in page)
    assert "activation_rescue_open_cases" in {name for name, _labels in page}
