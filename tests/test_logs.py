"""The log output of a whole activation: JSON lines that tie it together and give nothing away."""

import json
import re
import uuid

import pytest
import redis
from django.conf import settings
from django.test import Client

from activation.models import CaseState
from activation.tests.test_callbacks import event_body, signed_headers
from portal.celery import app as celery_app
from portal.logs import CONTEXT_FIELDS
from tests.factories import PASSWORD, CustomerFactory, open_failed_case

from .fixtures import last_sms_code, wait_until
from .log_capture import captured_json_logs
from .processes import portal_env, start_worker

REQUIRED_KEYS = {"time", "level", "logger", "message", *CONTEXT_FIELDS}
ISO_8601_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def proxied(request_id: str) -> dict[str, str]:
    return {"X-Request-ID": request_id}


def secrets_in(line: str, *, phone_number: str, code: str) -> list[str]:
    """Name whatever ``line`` gives away: the phone number, the code, a password or a secret."""
    national = phone_number.removeprefix("+86")
    found = [
        name for name, value in (("phone", phone_number), ("phone", national)) if value in line
    ]
    # The code as a number of its own, not six digits inside a longer one.
    if re.search(rf"(?<![\d.]){code}(?!\d)", line):
        found.append("code")
    webhook_key = settings.CORE_WEBHOOK_SECRET.removeprefix("whsec_")
    for name, value in (
        ("password", PASSWORD),
        ("SECRET_KEY", settings.SECRET_KEY),
        ("CORE_API_TOKEN", settings.CORE_API_TOKEN),
        ("CORE_WEBHOOK_SECRET", settings.CORE_WEBHOOK_SECRET),
        ("CORE_WEBHOOK_SECRET", webhook_key),
    ):
        if value in line:
            found.append(name)
    return found


# Transactional, so work queued on commit runs inside the request that committed, as it does
# in production (eagerly here: the tasks' lines are in this process's log).
@pytest.mark.django_db(transaction=True)
def test_a_whole_activation_logs_json_lines_without_numbers_codes_or_secrets(
    client, settings, core_simulator
):
    settings.TRUSTED_PROXY_COUNT = 1  # the proxy's X-Request-ID is believed
    customer = CustomerFactory()
    case = open_failed_case(customer)
    retry_url = f"/activation/{case.pk}/retry/"
    core_simulator.configure(script=["pending"], callback_url="")
    typed_number = customer.phone_number.national_number  # as people type it: 138…

    with captured_json_logs() as logs:
        signed_in = client.post(
            "/accounts/login/",
            {"username": str(typed_number), "password": PASSWORD},
            headers=proxied("sign-in-1"),
        )
        assert signed_in.status_code == 302
        sent = client.post(
            retry_url, {"action": "send", "channel": "sms"}, headers=proxied("send-code-1")
        )
        assert sent.status_code == 302
        code = last_sms_code(str(customer.phone_number))
        verified = client.post(
            retry_url,
            {"action": "verify", "code": code, "submission_id": str(uuid.uuid4())},
            headers=proxied("verify-1"),
        )
        assert verified.status_code == 302
        case.refresh_from_db()
        assert case.state == CaseState.AWAITING_CONFIRMATION
        body = event_body(case)
        callback = Client().post(  # the core, which has no session
            "/api/v1/core/events/",
            data=body,
            content_type="application/json",
            headers={**signed_headers(body), **proxied("callback-1")},
        )
        assert callback.status_code == 200

    case.refresh_from_db()
    assert case.state == CaseState.ACTIVATED
    assert [r["X-Request-ID"] for r in (signed_in, sent, verified, callback)] == [
        "sign-in-1",
        "send-code-1",
        "verify-1",
        "callback-1",
    ]

    lines = logs.lines()
    records = logs.records()  # every line is one JSON object
    assert len(records) >= 5
    for record in records:
        assert record.keys() >= REQUIRED_KEYS
        assert ISO_8601_UTC.fullmatch(record["time"])
    leaks = {
        line: found
        for line in lines
        if (found := secrets_in(line, phone_number=str(customer.phone_number), code=code))
    }
    assert leaks == {}

    # Each line of a request carries its id; once signed in, the customer; the case once known.
    sms_sent = [r for r in records if r["message"].startswith("SMS sent to")]
    assert [(r["request_id"], r["user_id"], r["case_id"]) for r in sms_sent] == [
        ("send-code-1", customer.pk, case.pk),  # the code
        ("callback-1", None, None),  # the news that the line is active, from a task
    ]
    last_four = str(customer.phone_number)[-4:]
    assert sms_sent[0]["message"] == f"SMS sent to ***{last_four} through LocmemBackend"
    # The tasks a request enqueued carry its id, and their own.
    tasks = {r["task_name"]: r for r in records if r["task_id"]}
    assert tasks["activation.tasks.deliver_core_request"]["request_id"] == "verify-1"
    assert tasks["activation.tasks.notify_case_resolved"]["request_id"] == "callback-1"
    assert sms_sent[1]["task_name"] == "activation.tasks.notify_case_resolved"
    # A library's lines carry the context too.
    axes = [r for r in records if r["message"].startswith("AXES: Successful login")]
    assert [r["request_id"] for r in axes] == ["sign-in-1"]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_worker_logs_json_lines_with_the_id_of_the_request_that_enqueued_the_task(
    client, settings, tmp_path, core_simulator
):
    broker = redis.Redis.from_url(settings.TEST_REDIS_URL)
    broker.flushdb()
    celery_app.conf.task_always_eager = False
    worker = start_worker(
        tmp_path,
        "logs",
        portal_env(
            CORE_API_URL=core_simulator.url,
            LOG_FORMAT="json",
            SMS_BACKEND="verification.sms.FileBackend",
            SMS_FILE_PATH=str(tmp_path / "sms.jsonl"),
        ),
    )
    try:
        settings.TRUSTED_PROXY_COUNT = 1
        customer = CustomerFactory()
        case = open_failed_case(customer)
        client.force_login(customer)
        retry_url = f"/activation/{case.pk}/retry/"
        client.post(retry_url, {"action": "send", "channel": "sms"})
        verified = client.post(
            retry_url,
            {"action": "verify", "code": last_sms_code(), "submission_id": str(uuid.uuid4())},
            headers=proxied("verify-from-the-proxy"),
        )
        assert verified["X-Request-ID"] == "verify-from-the-proxy"

        def finished_tasks() -> dict[str, dict] | None:
            lines = [json.loads(x) for x in worker.output().splitlines() if x.startswith("{")]
            done = {
                x["task_name"]: x for x in lines if x["task_id"] and "succeeded" in x["message"]
            }
            return done if len(done) == 2 else None

        # The delivery activates the case, and its task enqueues the customer's notification.
        done = wait_until(finished_tasks, timeout=60, what="both tasks")
    finally:
        output = worker.output()
        worker.stop()
        celery_app.conf.task_always_eager = True
        broker.flushdb()

    assert done.keys() == {
        "activation.tasks.deliver_core_request",
        "activation.tasks.notify_case_resolved",
    }
    for record in done.values():
        assert record["request_id"] == "verify-from-the-proxy"
        assert record["level"] == "INFO" and record["logger"] == "celery.app.trace"
        assert ISO_8601_UTC.fullmatch(record["time"])
    assert (
        done["activation.tasks.deliver_core_request"]["task_id"]
        in done["activation.tasks.deliver_core_request"]["message"]
    )
    assert str(customer.phone_number) not in output
    assert str(customer.phone_number.national_number) not in output
    # Every line the worker logged is JSON (Celery's start-up banner is printed, not logged).
    logged = [line for line in output.splitlines() if line.startswith("{")]
    assert all(json.loads(line).keys() >= REQUIRED_KEYS for line in logged)
