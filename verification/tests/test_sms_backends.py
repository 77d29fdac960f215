import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import time_machine
from django.utils import timezone

from verification.sms import FileBackend, HttpGatewayBackend, SmsDeliveryError


class FakeGateway:
    """A local SMS gateway that answers with the statuses it is given, in order."""

    def __init__(self, statuses: list[int], delay: float = 0.0) -> None:
        self.statuses = list(statuses)
        self.received: list[dict] = []
        self.delay = delay
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                gateway.received.append({"body": body, "headers": dict(self.headers)})
                status = gateway.statuses.pop(0) if gateway.statuses else 200
                if status == 0:  # hang up without answering: a timeout
                    threading.Event().wait(gateway.delay)
                    status = 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/send"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway(settings):
    gateways = []

    def start(statuses, delay=0.0):
        fake = FakeGateway(statuses, delay)
        gateways.append(fake)
        settings.SMS_GATEWAY_URL = fake.url
        settings.SMS_GATEWAY_TOKEN = "gateway-token"
        settings.SMS_GATEWAY_RETRIES = 2
        settings.SMS_GATEWAY_READ_TIMEOUT_SECONDS = 0.3
        return fake

    yield start
    for fake in gateways:
        fake.close()


def test_the_gateway_receives_the_message_with_its_token(gateway):
    fake = gateway([200])
    HttpGatewayBackend().send(to="+8613812345678", body="Your code is 123456")
    assert len(fake.received) == 1
    request = fake.received[0]
    assert request["body"] == {"to": "+8613812345678", "body": "Your code is 123456"}
    assert request["headers"]["Authorization"] == "Bearer gateway-token"


def test_server_errors_and_timeouts_are_retried_with_one_message_id(gateway):
    fake = gateway([503, 0, 200], delay=1.0)
    HttpGatewayBackend().send(to="+8613812345678", body="hello")
    assert len(fake.received) == 3
    assert len({r["headers"]["Idempotency-Key"] for r in fake.received}) == 1


def test_a_refusal_is_not_retried(gateway):
    fake = gateway([400, 200])
    with pytest.raises(SmsDeliveryError, match="HTTP 400"):
        HttpGatewayBackend().send(to="+8613812345678", body="hello")
    assert len(fake.received) == 1


def test_giving_up_after_the_last_retry(gateway):
    fake = gateway([500, 502, 503, 200])
    with pytest.raises(SmsDeliveryError, match="HTTP 503"):
        HttpGatewayBackend().send(to="+8613812345678", body="hello")
    assert len(fake.received) == 3


def test_a_failing_gateway_is_left_alone_until_it_may_have_recovered(gateway, settings):
    settings.SMS_GATEWAY_BREAKER_FAILURE_THRESHOLD = 2
    settings.SMS_GATEWAY_BREAKER_RESET_SECONDS = 30
    fake = gateway([503] * 6)  # two sends of three tries each
    for _send in range(2):
        with pytest.raises(SmsDeliveryError, match="HTTP 503"):
            HttpGatewayBackend().send(to="+8613812345678", body="hello")
    assert len(fake.received) == 6

    with pytest.raises(SmsDeliveryError, match="circuit open"):
        HttpGatewayBackend().send(to="+8613812345678", body="hello")
    assert len(fake.received) == 6  # the gateway was not asked

    with time_machine.travel(timezone.now() + timedelta(seconds=31), tick=False):
        HttpGatewayBackend().send(to="+8613812345678", body="the trial")
        HttpGatewayBackend().send(to="+8613812345678", body="closed again")
    assert [r["body"]["body"] for r in fake.received[6:]] == ["the trial", "closed again"]


def test_a_gateway_that_refuses_one_message_is_not_failing(gateway, settings):
    settings.SMS_GATEWAY_BREAKER_FAILURE_THRESHOLD = 1
    fake = gateway([400, 200])
    with pytest.raises(SmsDeliveryError, match="HTTP 400"):
        HttpGatewayBackend().send(to="+8613812345678", body="refused")
    HttpGatewayBackend().send(to="+8613812345678", body="sent")
    assert len(fake.received) == 2


def test_the_file_backend_writes_one_json_line_per_message(settings, tmp_path):
    settings.SMS_FILE_PATH = str(tmp_path / "sms.jsonl")
    FileBackend().send(to="+8613812345678", body="验证码 123456")
    FileBackend().send(to="+8613812345679", body="second")
    lines = [json.loads(line) for line in (tmp_path / "sms.jsonl").read_text().splitlines()]
    assert [(m["to"], m["body"]) for m in lines] == [
        ("+8613812345678", "验证码 123456"),
        ("+8613812345679", "second"),
    ]
