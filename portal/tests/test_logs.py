import json
import logging
import os
import subprocess
import sys

import pytest
from celery.app.task import Context

from activation.tasks import sweep_core_outbox
from portal import logs
from portal.celery import (
    REQUEST_ID_MESSAGE_HEADER,
    _carry_request_id,
    _end_task_log_context,
    _start_task_log_context,
)
from portal.tests.test_settings import GOOD, ROOT
from tests.log_capture import captured_json_logs


@pytest.fixture(autouse=True)
def _fresh_log_context():
    logs.clear()
    yield
    logs.clear()


def record(message: str = "hello", *args, **extra) -> logging.LogRecord:
    made = logging.LogRecord("portal.test", logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    logs.ContextFilter().filter(made)
    return made


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("to +8613812345678.", "to +***5678."),
        ("to 13812345678", "to ***5678"),
        ("to 8613812345678", "to ***5678"),
        ("to +86 138 1234 5678", "to +***5678"),
        ("to 138-1234-5678", "to ***5678"),
        ("to +14155552671", "to +***2671"),
        ('{"to": "+8613812345678"}', '{"to": "+***5678"}'),
        ("Authorization: Bearer abc.DEF-123", "Authorization: Bearer [secret]"),
        ("secret whsec_ZGV2ZWxvcG1lbnQ=", "secret whsec_[secret]"),
    ],
)
def test_phone_numbers_and_tokens_are_masked(text, redacted):
    assert logs.redact(text) == redacted


@pytest.mark.parametrize(
    "text",
    [
        "request 5f0c13812345678a done",  # a hexadecimal id
        "at 1712345678901 ms",  # epoch milliseconds
        "case 12345, attempt 3, took 0.25 s",
        "id 0b6e4a8e-1381-2345-6789-0a1b2c3d4e5f",
    ],
)
def test_ids_and_ordinary_numbers_are_left_alone(text):
    assert logs.redact(text) == text


def test_the_configured_secrets_are_masked_wherever_they_appear(settings):
    settings.CORE_API_TOKEN = "core-token-for-this-test"
    settings.SMS_GATEWAY_TOKEN = "gateway-token-for-this-test"
    text = (
        f"{settings.SECRET_KEY} {settings.CORE_API_TOKEN} {settings.SMS_GATEWAY_TOKEN} "
        f"{settings.CORE_WEBHOOK_SECRET.removeprefix('whsec_')}"
    )
    assert logs.redact(text) == "[secret] [secret] [secret] [secret]"


def test_a_json_line_holds_time_level_logger_message_and_the_context():
    token = logs.start(request_id="r-1")
    logs.bind(user_id=7, case_id=42)
    line = logs.JsonFormatter().format(record("SMS to %s failed", "+8613812345678", status=503))
    logs.end(token)
    assert json.loads(line) == {
        "time": json.loads(line)["time"],
        "level": "WARNING",
        "logger": "portal.test",
        "message": "SMS to +***5678 failed",
        "request_id": "r-1",
        "user_id": 7,
        "case_id": 42,
        "task_id": None,
        "task_name": None,
        "status": 503,
    }
    assert json.loads(line)["time"].endswith("Z")
    assert "\n" not in line


def test_an_exception_is_one_json_line_and_masked_too():
    try:
        raise ValueError("no route to 13812345678")
    except ValueError:
        failed = record("delivery failed")
        failed.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(failed)
    assert "\n" not in line
    exception = json.loads(line)["exception"]
    assert exception.startswith("Traceback") and "no route to ***5678" in exception


def test_a_console_line_ends_with_the_known_context():
    logs.start(request_id="r-1", case_id=42)
    line = logs.ConsoleFormatter().format(record("hello"))
    assert line.endswith("WARNING portal.test: hello [request_id=r-1 case_id=42]")
    assert logs.ConsoleFormatter().format(record("hello", case_id=9)).endswith("case_id=9]")


def test_a_field_given_with_the_line_wins_over_the_context():
    logs.start(case_id=42)
    assert record(case_id=9).case_id == 9


def test_a_context_ends_as_it_was_before_it_started():
    logs.start(request_id="outer")
    token = logs.start(task_id="inner")
    logs.bind(case_id=1)
    assert logs.current() == {"task_id": "inner", "case_id": 1}
    logs.end(token)
    assert logs.current() == {"request_id": "outer"}


def test_a_published_task_carries_the_request_id_in_its_headers():
    headers: dict = {}
    _carry_request_id(headers=headers)
    assert headers == {}
    logs.start(request_id="r-1")
    _carry_request_id(headers=headers)
    assert headers == {REQUEST_ID_MESSAGE_HEADER: "r-1"}


def test_a_task_in_a_worker_logs_with_the_request_id_it_carries_and_its_own_id():
    task = type("FakeTask", (), {"name": "activation.tasks.example"})()
    task.request = Context({REQUEST_ID_MESSAGE_HEADER: "r-1", "is_eager": False})
    logs.start(case_id=42)  # left over from something else in this thread
    _start_task_log_context(task_id="t-1", task=task)
    assert logs.current() == {
        "request_id": "r-1",
        "task_id": "t-1",
        "task_name": "activation.tasks.example",
    }
    _end_task_log_context(task_id="t-1")
    assert logs.current() == {"case_id": 42}


@pytest.mark.django_db
def test_an_eager_task_logs_inside_its_request_and_leaves_the_requests_context_as_it_was():
    logs.start(request_id="r-1", user_id=7)
    with captured_json_logs() as captured:
        sweep_core_outbox.delay()
    assert logs.current() == {"request_id": "r-1", "user_id": 7}
    [succeeded] = [r for r in captured.records() if r["logger"] == "celery.app.trace"]
    assert succeeded["task_name"] == "activation.tasks.sweep_core_outbox"
    assert succeeded["task_id"] in succeeded["message"]
    assert (succeeded["request_id"], succeeded["user_id"]) == ("r-1", 7)


def log_a_line(**environment: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TEST_", "LOG_"))}
    env.update(environment, DJANGO_SETTINGS_MODULE="portal.settings")
    script = (
        "import django, logging; django.setup(); "
        "logging.getLogger('portal.check').warning('texted %s', '+8613812345678')"
    )
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )


def test_production_logs_json_lines_to_standard_output():
    result = log_a_line(**GOOD)
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)
    assert (line["level"], line["logger"], line["message"]) == (
        "WARNING",
        "portal.check",
        "texted +***5678",
    )


def test_production_may_choose_console_lines():
    result = log_a_line(**GOOD, LOG_FORMAT="console")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("WARNING portal.check: texted +***5678")


def test_development_logs_readable_lines():
    result = log_a_line(PORTAL_ENV="development")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("WARNING portal.check: texted +***5678")


@pytest.mark.parametrize(
    ("variable", "value"), [("LOG_FORMAT", "xml"), ("LOG_LEVEL", "LOUD")], ids=["format", "level"]
)
def test_a_malformed_log_setting_stops_start_up_with_its_name(variable, value):
    result = log_a_line(**{variable: value})
    assert result.returncode != 0
    assert f"{variable} must be" in result.stderr
