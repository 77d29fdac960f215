import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings
from standardwebhooks.webhooks import Webhook

from activation import services
from activation.models import CaseEvent, CaseState, CoreCallback, CreditLine
from activation.timeline import find_case_chain_break

from .helpers import submitted_case

pytestmark = pytest.mark.django_db
URL = "/api/v1/core/events/"


@pytest.fixture
def awaiting_case(customer, core_simulator, django_capture_on_commit_callbacks):
    core_simulator.configure(script=["pending"], callback_url="")
    case, request = submitted_case(customer, django_capture_on_commit_callbacks)
    services.deliver_core_request(request_id=request.pk)
    case.refresh_from_db()
    assert case.state == CaseState.AWAITING_CONFIRMATION
    return case


def event_body(case, *, event_type="activation.succeeded", version=None, status="active") -> str:
    line = CreditLine.objects.get(pk=case.credit_line_id)
    return json.dumps(
        {
            "id": "evt_1",
            "type": event_type,
            "created_at": datetime.now(UTC).isoformat(),
            "data": {
                "activation_id": line.core_activation_id,
                "credit_line_ref": line.reference,
                "status": status,
                "reason": None if status == "active" else "timeout",
                "version": line.core_version + 1 if version is None else version,
            },
        }
    )


def signed_headers(body: str, *, webhook_id="msg_1", at: datetime | None = None, secret=None):
    at = at or datetime.now(UTC)
    signature = Webhook(secret or settings.CORE_WEBHOOK_SECRET).sign(webhook_id, at, body)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def post(client, body: str, headers: dict):
    return client.post(URL, data=body, content_type="application/json", headers=headers)


def snapshot(case):
    case.refresh_from_db()
    line = CreditLine.objects.get(pk=case.credit_line_id)
    return (case.state, line.status, line.core_version, CaseEvent.objects.filter(case=case).count())


def test_a_valid_callback_activates_the_case(client, awaiting_case):
    body = event_body(awaiting_case)
    response = post(client, body, signed_headers(body))
    assert response.status_code == 200
    assert response.json() == {"status": "applied"}
    awaiting_case.refresh_from_db()
    assert awaiting_case.state == CaseState.ACTIVATED
    assert CreditLine.objects.get(pk=awaiting_case.credit_line_id).status == "active"
    assert find_case_chain_break(awaiting_case.pk) is None


def _wrong_secret(body):
    return signed_headers(body, secret="whsec_" + "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA==")


def _missing_signature(body):
    headers = signed_headers(body)
    del headers["webhook-signature"]
    return headers


def _malformed_signature(body):
    return {**signed_headers(body), "webhook-signature": "v1-not-a-signature"}


def _bad_base64(body):
    return {**signed_headers(body), "webhook-signature": "v1,%%%not-base64%%%"}


def _ten_minutes_old(body):
    return signed_headers(body, at=datetime.now(UTC) - timedelta(minutes=10))


def _timestamp_not_a_number(body):
    return {**signed_headers(body), "webhook-timestamp": "yesterday"}


@pytest.mark.parametrize(
    "make_headers",
    [
        _wrong_secret,
        _missing_signature,
        _malformed_signature,
        _bad_base64,
        _ten_minutes_old,
        _timestamp_not_a_number,
        lambda body: {},
    ],
    ids=["wrong", "missing", "malformed", "bad-base64", "ten-minutes-old", "bad-timestamp", "none"],
)
def test_a_bad_signature_gets_4xx_and_changes_nothing(client, awaiting_case, make_headers):
    body = event_body(awaiting_case)
    before = snapshot(awaiting_case)
    response = post(client, body, make_headers(body))
    assert 400 <= response.status_code < 500
    assert response.json()["code"] == "invalid_signature"
    assert snapshot(awaiting_case) == before
    assert not CoreCallback.objects.exists()


def test_a_tampered_body_is_refused(client, awaiting_case):
    body = event_body(awaiting_case)
    headers = signed_headers(body)
    response = post(client, body.replace("succeeded", "failed"), headers)
    assert response.status_code == 401
    assert snapshot(awaiting_case)[0] == CaseState.AWAITING_CONFIRMATION


@pytest.mark.parametrize("body", ["not json", "[]", '{"type": "activation.succeeded"}'])
def test_a_signed_but_malformed_body_gets_4xx(client, awaiting_case, body):
    before = snapshot(awaiting_case)
    response = post(client, body, signed_headers(body))
    assert 400 <= response.status_code < 500
    assert snapshot(awaiting_case) == before


def test_a_callback_for_an_unknown_line_gets_422(client, awaiting_case):
    body = event_body(awaiting_case).replace(awaiting_case.credit_line.reference, "CL-NOPE")
    response = post(client, body, signed_headers(body))
    assert response.status_code == 422
    assert response.json()["code"] == "unknown_credit_line"


def test_a_duplicate_is_answered_2xx_and_changes_nothing(client, awaiting_case):
    body = event_body(awaiting_case)
    assert post(client, body, signed_headers(body)).status_code == 200
    after_first = snapshot(awaiting_case)
    time.sleep(0.01)
    response = post(client, body, signed_headers(body))
    assert response.status_code == 200
    assert response.json() == {"status": "duplicate"}
    assert snapshot(awaiting_case) == after_first
    assert CoreCallback.objects.count() == 1


def test_an_older_version_never_moves_a_case_backwards(client, awaiting_case):
    version = CreditLine.objects.get(pk=awaiting_case.credit_line_id).core_version
    succeeded = event_body(awaiting_case, version=version + 2)
    assert (
        post(client, succeeded, signed_headers(succeeded, webhook_id="msg_new")).status_code == 200
    )
    stale_failure = event_body(
        awaiting_case, event_type="activation.failed", status="inactive", version=version + 1
    )
    response = post(client, stale_failure, signed_headers(stale_failure, webhook_id="msg_old"))
    assert response.status_code == 200
    state, line_status, core_version, _events = snapshot(awaiting_case)
    assert (state, line_status, core_version) == (CaseState.ACTIVATED, "active", version + 2)


def test_a_failure_callback_sends_the_case_to_review(client, awaiting_case):
    failed = event_body(awaiting_case, event_type="activation.failed", status="inactive")
    assert post(client, failed, signed_headers(failed)).status_code == 200
    awaiting_case.refresh_from_db()
    assert (awaiting_case.state, awaiting_case.failure_reason) == (
        CaseState.NEEDS_REVIEW,
        "core_rejected",
    )


# --- Payloads the database could not store, and types the contract does not define -----------


def _signed_event(case, change, *, webhook_id="msg_bad") -> tuple[str, dict]:
    event = json.loads(event_body(case))
    change(event)
    body = json.dumps(event)  # NaN is written as the bare token NaN, as a careless core would
    return body, signed_headers(body, webhook_id=webhook_id)


def _nested(depth: int) -> list:
    value: list = []
    for _level in range(depth - 1):
        value = [value]
    return value


UNSTORABLE = {
    "a NUL in the activation id": lambda e: e["data"].update(activation_id="act\x00ivation"),
    "a NUL in a field the portal does not read": lambda e: e["data"].update(note="a\x00b"),
    "a NUL in a key": lambda e: e["data"].update({"n\x00te": "x"}),
    "a NaN version": lambda e: e["data"].update(version=float("nan")),
    "a NaN anywhere": lambda e: e.update(score=float("nan")),
    "an infinite number": lambda e: e["data"].update(limit=float("inf")),
    "a version of 2**63": lambda e: e["data"].update(version=2**63),
    "a version of 2**64": lambda e: e["data"].update(version=2**64),
    "a negative version": lambda e: e["data"].update(version=-1),
    "a version that is a string": lambda e: e["data"].update(version="7"),
    "a 100-character type": lambda e: e.update(type="activation." + "x" * 89),
    "a 100-character activation id": lambda e: e["data"].update(activation_id="a" * 100),
    "a 100-character credit-line reference": lambda e: e["data"].update(
        credit_line_ref="CL-" + "9" * 97
    ),
    # Padding that trimming would hide: what is checked is what is stored and looked up.
    "a type padded past its column": lambda e: e.update(type=" " * 20 + "x" * 64),
    "an activation id padded past its column": lambda e: e["data"].update(
        activation_id=" " * 8 + "A" * 64
    ),
    "a credit-line reference padded past its column": lambda e: e["data"].update(
        credit_line_ref=" " * 30 + e["data"]["credit_line_ref"]
    ),
    "data that is a list": lambda e: e.update(data=[1, 2]),
    # JSON's "\ud800" escape decodes to a lone surrogate, which UTF-8 cannot encode.
    "a lone surrogate in a field the portal does not read": lambda e: e["data"].update(
        note="\ud800"
    ),
    "a lone surrogate in a key": lambda e: e["data"].update({"n\udc00te": "x"}),
    "a lone surrogate in an extra field of the event": lambda e: e.update(note="ok \udbff"),
    "a lone surrogate in a type the contract does not define": lambda e: e.update(
        type="x.y", data={"note": "\ud800"}
    ),
    "nesting deeper than the portal reads": lambda e: e["data"].update(z=_nested(40)),
}


@pytest.mark.postgres
@pytest.mark.parametrize("change", UNSTORABLE.values(), ids=UNSTORABLE.keys())
def test_a_signed_callback_the_database_could_not_store_gets_400_and_changes_nothing(
    client, awaiting_case, change
):
    before = snapshot(awaiting_case)
    body, headers = _signed_event(awaiting_case, change)
    response = post(client, body, headers)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_payload"
    assert response.json()["details"]  # says which field, or why
    assert snapshot(awaiting_case) == before
    assert not CoreCallback.objects.exists()


def test_a_signed_callback_nested_5000_deep_gets_400_and_changes_nothing(client, awaiting_case):
    before = snapshot(awaiting_case)
    # Written by hand: json.dumps itself cannot nest this deep.
    body = event_body(awaiting_case)[:-1] + ', "z": ' + "[" * 5000 + "]" * 5000 + "}"
    response = post(client, body, signed_headers(body))
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_payload"
    assert "nested too deep" in str(response.json()["details"])
    assert snapshot(awaiting_case) == before
    assert not CoreCallback.objects.exists()


def test_a_callback_nested_as_deep_as_the_portal_reads_is_applied(client, awaiting_case):
    event = json.loads(event_body(awaiting_case))
    event["data"]["trace"] = _nested(30)  # 32 levels with the event and its data
    body = json.dumps(event)
    response = post(client, body, signed_headers(body))
    assert response.status_code == 200
    assert response.json() == {"status": "applied"}
    assert CoreCallback.objects.get().payload["data"]["trace"] == _nested(30)


@pytest.mark.postgres
def test_a_200_character_webhook_id_gets_400_and_changes_nothing(client, awaiting_case):
    before = snapshot(awaiting_case)
    body, headers = _signed_event(awaiting_case, lambda e: None, webhook_id="msg_" + "x" * 196)
    response = post(client, body, headers)
    assert response.status_code == 400
    assert "webhook_id" in response.json()["details"]
    assert snapshot(awaiting_case) == before
    assert not CoreCallback.objects.exists()


def test_a_callback_type_the_contract_does_not_define_is_recorded_and_ignored(
    client, awaiting_case
):
    line_before = CreditLine.objects.filter(pk=awaiting_case.credit_line_id).values().get()
    events_before = CaseEvent.objects.filter(case=awaiting_case).count()
    body = event_body(awaiting_case, event_type="activation.updated", status="pending")
    response = post(client, body, signed_headers(body, webhook_id="msg_updated"))
    assert response.status_code == 200
    assert response.json() == {"status": "ignored"}

    awaiting_case.refresh_from_db()
    assert awaiting_case.state == CaseState.AWAITING_CONFIRMATION
    assert awaiting_case.failure_reason == ""
    assert CreditLine.objects.filter(pk=awaiting_case.credit_line_id).values().get() == line_before
    recorded = CoreCallback.objects.get()
    assert (recorded.webhook_id, recorded.event_type) == ("msg_updated", "activation.updated")
    new_events = list(CaseEvent.objects.filter(case=awaiting_case).order_by("seq")[events_before:])
    assert [(e.kind, e.state_before, e.state_after) for e in new_events] == [
        ("core.callback_ignored", "", "")
    ]
    assert new_events[0].data["type"] == "activation.updated"
    assert find_case_chain_break(awaiting_case.pk) is None

    # A redelivery is a duplicate, as for any other callback.
    response = post(client, body, signed_headers(body, webhook_id="msg_updated"))
    assert response.json() == {"status": "duplicate"}
    assert CaseEvent.objects.filter(case=awaiting_case).count() == events_before + 1


def test_an_unknown_type_for_a_line_the_portal_does_not_know_is_still_acknowledged(
    client, awaiting_case
):
    body = event_body(awaiting_case, event_type="line.renamed").replace(
        awaiting_case.credit_line.reference, "CL-NOPE"
    )
    response = post(client, body, signed_headers(body))
    assert response.status_code == 200
    assert response.json() == {"status": "ignored"}
    assert CoreCallback.objects.get().event_type == "line.renamed"
