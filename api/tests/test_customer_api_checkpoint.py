"""The app at the fraud checkpoint and with a passkey: a step-up comes back as an error code the
app acts on, answered by the customer's established authenticator app; a passkey answers for
the app session that asked."""

import json

import pytest
import time_machine
from django.utils import timezone
from rest_framework.test import APIClient

from activation.models import CaseState
from risk.tests.conftest import app_code, established_customer, give_app, load_default_rule_set
from tests.factories import PASSWORD, open_failed_case
from tests.fixtures import last_sms_code
from verification.tests.soft_authenticator import SoftAuthenticator
from verification.tests.test_passkeys import add_passkey

pytestmark = pytest.mark.django_db

PIXEL = {"HTTP_USER_AGENT": "okhttp/4.12 RescueApp/3.1 (Android 14; Pixel 8)"}


def signed_in_app(customer, installation: str, **headers) -> APIClient:
    client = APIClient()
    tokens = client.post(
        "/api/v1/auth/token/",
        {"username": customer.username, "password": PASSWORD, "platform": "android"},
        format="json",
        HTTP_X_INSTALLATION_ID=installation,
        **headers,
    ).json()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {tokens['access']}",
        HTTP_X_INSTALLATION_ID=installation,
        **headers,
    )
    return client


def request_code(app: APIClient, case, channel: str = "sms"):
    return app.post(f"/api/v1/cases/{case.pk}/codes/", {"channel": channel}, format="json")


def submit(app: APIClient, case, channel: str, code: str):
    return app.post(
        f"/api/v1/cases/{case.pk}/verification/", {"channel": channel, "code": code}, format="json"
    )


def test_a_new_installation_is_asked_to_step_up_and_the_app_code_answers(settings):
    load_default_rule_set()
    customer = established_customer()
    give_app(customer)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        known = signed_in_app(customer, "inst-known-phone-0001", **PIXEL)
        first = open_failed_case(customer)
        assert request_code(known, first).status_code == 202
        assert submit(known, first, "sms", last_sms_code()).status_code == 202

        clock.shift(3600)
        stranger = signed_in_app(
            customer, "inst-never-seen-0002", HTTP_USER_AGENT="Dalvik/2.1.0 (Linux; U; Android 9)"
        )
        case = open_failed_case(customer)
        response = request_code(stranger, case)
        assert response.status_code == 403, response.json()
        body = response.json()
        assert body["code"] == "step_up_required" and body["details"]["channel"] == "totp"
        assert body["message"]  # the reason, told plainly, in the request's language

        # The SMS code is not enough; the customer's established app is.
        clock.shift(5)
        answered = submit(stranger, case, "totp", app_code(customer))
        assert answered.status_code == 202, answered.json()
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING


def test_a_passkey_answers_through_the_app_and_only_for_its_own_session(client, time_machine):
    customer = established_customer()
    phone = SoftAuthenticator()
    time_machine.move_to(timezone.now(), tick=False)
    client.force_login(customer)
    add_passkey(client, customer, phone)
    time_machine.shift(61)
    case = open_failed_case(customer)
    app = signed_in_app(customer, "inst-passkey-phone-01")
    assert request_code(app, case, "passkey").status_code == 202
    options = app.post(f"/api/v1/cases/{case.pk}/passkey-options/")
    assert options.status_code == 200, options.json()
    answer = json.dumps(phone.get(options.json()))

    # Another installation of the same customer cannot spend this session's request.
    other = signed_in_app(customer, "inst-other-phone-002")
    refused = submit(other, case, "passkey", answer)
    assert refused.status_code == 422
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION

    accepted = submit(app, case, "passkey", answer)
    assert accepted.status_code == 202, accepted.json()
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING
