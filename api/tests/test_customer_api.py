"""The customer API through the real stack: sign-in with the web's protections, rotating and
revocable tokens, cases explained in the customer's language, codes requested and submitted
with idempotency keys, step-up and review as error codes the app acts on."""

import json
import time
import uuid
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from activation.models import ActivationCase, CaseEvent, CaseState, FailureReason
from api.models import AppSession, IdempotencyRecord
from tests.factories import PASSWORD, CustomerFactory, open_failed_case
from tests.fixtures import last_sms_code

pytestmark = pytest.mark.django_db

INSTALLATION = "inst-" + "a1b2c3d4e5f6a7b8"
APP = {"HTTP_X_INSTALLATION_ID": INSTALLATION, "HTTP_X_APP_PLATFORM": "android"}


def sign_in(client: APIClient, user, *, password: str = PASSWORD, installation=INSTALLATION):
    return client.post(
        "/api/v1/auth/token/",
        {"username": user.username, "password": password, "platform": "android"},
        format="json",
        HTTP_X_INSTALLATION_ID=installation,
    )


@pytest.fixture
def app(customer) -> APIClient:
    client = APIClient()
    tokens = sign_in(client, customer).json()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}", **APP)
    client.tokens = tokens
    return client


def test_sign_in_gives_a_short_lived_access_token_and_a_refresh_token(customer):
    response = sign_in(APIClient(), customer)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    session = AppSession.objects.get(user=customer)
    assert body["session"]["id"] == session.pk and session.installation_id == INSTALLATION
    assert "Set-Cookie" not in response.headers  # an app keeps no cookies


def test_a_wrong_password_is_401_in_the_envelope_and_the_lock_out_follows_the_web(customer):
    client = APIClient()
    for _ in range(4):
        response = sign_in(client, customer, password="wrong-password")
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_credentials"
    fifth = sign_in(client, customer, password="wrong-password")
    assert (fifth.status_code, fifth.json()["code"]) == (429, "locked_out")
    locked = sign_in(client, customer)  # the right password, after the web's 5 failures
    assert locked.status_code == 429
    assert locked.json()["code"] == "locked_out"
    assert not AppSession.objects.exists()


def test_sign_in_needs_an_installation_id_and_refuses_staff(customer, agent):
    client = APIClient()
    response = client.post(
        "/api/v1/auth/token/",
        {"username": customer.username, "password": PASSWORD, "platform": "ios"},
        format="json",
    )
    assert (response.status_code, response.json()["code"]) == (400, "installation_id_required")
    # A staff member's right password is answered as a wrong one: the app's sign-in confirms
    # no staff password (staff sign in to the back office, with their second factor).
    staff = sign_in(client, agent)
    assert (staff.status_code, staff.json()["code"]) == (401, "invalid_credentials")
    assert not AppSession.objects.exists()


def test_the_refresh_token_rotates_and_a_reused_one_ends_the_session(app, customer):
    first_refresh = app.tokens["refresh"]
    anonymous = APIClient()
    rotated = anonymous.post("/api/v1/auth/refresh/", {"refresh": first_refresh}, format="json")
    assert rotated.status_code == 200
    assert rotated.json()["refresh"] != first_refresh and rotated.json()["device_token"] == ""
    # The answer was lost on a bad network: the same refresh sent again soon after gets the
    # same new pair, and the session lives on.
    again = anonymous.post("/api/v1/auth/refresh/", {"refresh": first_refresh}, format="json")
    assert again.status_code == 200
    assert (again.json()["access"], again.json()["refresh"]) == (
        rotated.json()["access"],
        rotated.json()["refresh"],
    )
    assert AppSession.objects.get(user=customer).revoked_at is None
    # Past that grace (the kept answer gone), the old token coming back is a copy someone
    # holds: the whole session ends, for both holders.
    cache.clear()
    reused = anonymous.post("/api/v1/auth/refresh/", {"refresh": first_refresh}, format="json")
    assert (reused.status_code, reused.json()["code"]) == (401, "refresh_not_valid")
    newest = anonymous.post(
        "/api/v1/auth/refresh/", {"refresh": rotated.json()["refresh"]}, format="json"
    )
    assert newest.status_code == 401
    assert AppSession.objects.get(user=customer).revoked_reason == "refresh_reused"
    assert app.get("/api/v1/credit-lines/").status_code == 401


def test_only_the_device_token_of_an_earlier_sign_in_passes_the_account_ceiling(customer):
    first = sign_in(APIClient(), customer)
    device_token = first.json()["device_token"]
    assert len(device_token) == 43
    # Many wrong passwords from many addresses, each below its own lock-out.
    for n in range(20):
        wrong = APIClient(REMOTE_ADDR=f"198.51.100.{n // 4 + 1}")
        assert sign_in(wrong, customer, password="wrong-password").status_code == 401
    # The installation id is no secret: sending the owner's does not pass the ceiling ...
    thief = APIClient(REMOTE_ADDR="203.0.113.9")
    refused = sign_in(thief, customer)
    assert (refused.status_code, refused.json()["code"]) == (429, "rate_limited")
    assert int(refused.headers["Retry-After"]) > 0
    # ... the device token the owner's earlier sign-in handed out does.
    owner = APIClient(REMOTE_ADDR="192.0.2.44")
    passed = owner.post(
        "/api/v1/auth/token/",
        {"username": customer.username, "password": PASSWORD, "platform": "android"},
        format="json",
        HTTP_X_INSTALLATION_ID=INSTALLATION,
        HTTP_X_DEVICE_TOKEN=device_token,
    )
    assert passed.status_code == 200, passed.json()


def test_revoking_an_installation_ends_its_access_token_at_once(app, customer):
    other = APIClient()
    other_tokens = sign_in(other, customer, installation="inst-other-0000000000").json()
    other.credentials(
        HTTP_AUTHORIZATION=f"Bearer {other_tokens['access']}",
        HTTP_X_INSTALLATION_ID="inst-other-0000000000",
    )
    listed = app.get("/api/v1/auth/sessions/").json()
    assert {s["current"] for s in listed} == {True, False} and len(listed) == 2
    assert app.delete(f"/api/v1/auth/sessions/{other_tokens['session']['id']}/").status_code == 204
    refused = other.get("/api/v1/credit-lines/")
    assert (refused.status_code, refused.json()["code"]) == (401, "session_ended")
    # Another customer's session cannot be revoked (nor seen).
    stranger = CustomerFactory()
    theirs = sign_in(APIClient(), stranger).json()["session"]["id"]
    assert app.delete(f"/api/v1/auth/sessions/{theirs}/").status_code == 404
    assert AppSession.objects.get(pk=theirs).revoked_at is None


def test_a_token_is_bound_to_its_installation(app):
    app.credentials(
        HTTP_AUTHORIZATION=f"Bearer {app.tokens['access']}",
        HTTP_X_INSTALLATION_ID="inst-stolen-elsewhere-000",
    )
    response = app.get("/api/v1/credit-lines/")
    assert (response.status_code, response.json()["code"]) == (401, "installation_mismatch")


def test_a_session_cookie_does_not_open_the_api(client, customer):
    client.force_login(customer)
    assert client.get("/api/v1/credit-lines/").status_code == 401


def test_the_case_is_explained_in_the_language_of_accept_language(app, customer):
    case = open_failed_case(customer, reason=FailureReason.CORE_BUSY)
    english = app.get(f"/api/v1/cases/{case.pk}/").json()
    assert english["state"] == "failed" and english["can_retry"] is True
    assert english["explanation"]["reason"] == "core_busy"
    chinese = app.get(f"/api/v1/cases/{case.pk}/", HTTP_ACCEPT_LANGUAGE="zh-hans").json()
    assert chinese["explanation"]["title"] != english["explanation"]["title"]
    assert any("\u4e00" <= ch <= "\u9fff" for ch in chinese["explanation"]["what_to_do"])
    lines = app.get("/api/v1/credit-lines/").json()
    assert [c["id"] for c in lines[0]["cases"]] == [case.pk]


def test_another_customers_case_does_not_exist(app):
    theirs = open_failed_case(CustomerFactory())
    for path in ("", "channels/"):
        response = app.get(f"/api/v1/cases/{theirs.pk}/{path}")
        assert (response.status_code, response.json()["code"]) == (404, "case_not_found")
    response = app.post(f"/api/v1/cases/{theirs.pk}/codes/", {"channel": "sms"}, format="json")
    assert response.status_code == 404
    assert not CaseEvent.objects.filter(case=theirs, kind="verification.sent").exists()


def test_a_customer_activates_through_the_api_and_retries_are_idempotent(app, customer):
    case = open_failed_case(customer)
    channels = app.get(f"/api/v1/cases/{case.pk}/channels/").json()
    assert channels[0]["channel"] == "sms" and "*" in channels[0]["destination"]

    key = str(uuid.uuid4())
    sent = app.post(
        f"/api/v1/cases/{case.pk}/codes/",
        {"channel": "sms"},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
    )
    assert sent.status_code == 202 and sent.json()["resend_in"] > 0
    # The network dropped the answer: the same key and body give the first answer again,
    # and no second SMS is sent.
    again = app.post(
        f"/api/v1/cases/{case.pk}/codes/",
        {"channel": "sms"},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
    )
    assert again.status_code == 202 and again.json() == sent.json()
    assert CaseEvent.objects.filter(case=case, kind="verification.sent").count() == 1
    other_body = app.post(
        f"/api/v1/cases/{case.pk}/codes/",
        {"channel": "email"},
        format="json",
        HTTP_IDEMPOTENCY_KEY=key,
    )
    assert other_body.status_code == 409

    wrong = app.post(
        f"/api/v1/cases/{case.pk}/verification/",
        {"channel": "sms", "code": "000000"},
        format="json",
    )
    assert (wrong.status_code, wrong.json()["code"]) == (422, "code_invalid")
    time.sleep(1.1)  # past the throttle a wrong code starts
    submit_key = str(uuid.uuid4())
    body = {"channel": "sms", "code": last_sms_code()}
    done = app.post(
        f"/api/v1/cases/{case.pk}/verification/",
        body,
        format="json",
        HTTP_IDEMPOTENCY_KEY=submit_key,
    )
    assert done.status_code == 202 and done.json()["state"] == CaseState.SUBMITTING
    replay = app.post(
        f"/api/v1/cases/{case.pk}/verification/",
        body,
        format="json",
        HTTP_IDEMPOTENCY_KEY=submit_key,
    )
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING
    event = CaseEvent.objects.filter(case=case, kind="verification.succeeded").get()
    assert len(event.device_id) == 32 and INSTALLATION not in event.device_id


def test_asking_too_fast_is_429_with_retry_after(app, customer, settings):
    case = open_failed_case(customer)
    settings.ACTIVATION_RETRY_RATE_PER_CUSTOMER = "2/m"
    # Five tries at two a minute: whichever way django-ratelimit's fixed windows fall, one is
    # refused (two in one window, at most two in the next).
    answers = [
        app.post(f"/api/v1/cases/{case.pk}/codes/", {"channel": "totp"}, format="json")
        for _ in range(5)
    ]
    limited = next(a for a in answers if a.status_code == 429)
    assert int(limited.headers["Retry-After"]) > 0
    assert limited.json()["code"] == "rate_limited"


def test_a_settled_case_cannot_be_retried(app, customer):
    case = open_failed_case(customer)
    ActivationCase.objects.filter(pk=case.pk).update(state=CaseState.CLOSED)
    response = app.post(f"/api/v1/cases/{case.pk}/codes/", {"channel": "sms"}, format="json")
    assert (response.status_code, response.json()["code"]) == (409, "case_not_retryable")


def test_bad_input_gets_a_reason_never_a_500(app, customer):
    case = open_failed_case(customer)
    for body in ({}, {"channel": "pigeon"}, {"channel": ["sms"]}, "not json"):
        response = app.post(f"/api/v1/cases/{case.pk}/codes/", body, format="json")
        assert response.status_code == 400, body
        assert set(response.json()) == {"code", "message", "details"}
    assert app.get("/api/v1/cases/99999999999999999999/").status_code == 404
    expired = APIClient()
    expired.credentials(HTTP_AUTHORIZATION="Bearer not.a.jwt")
    assert expired.get("/api/v1/credit-lines/").json()["code"] == "token_not_valid"


def test_an_expired_access_token_is_refused(app, time_machine):
    time_machine.move_to(timedelta(minutes=6), tick=False)  # past the 5 minutes it lasts
    assert app.get("/api/v1/credit-lines/").status_code == 401


def test_a_path_the_api_does_not_have_is_a_404_in_the_envelope(app):
    for path in ("/api/v1/cases/-3.05e-13/channels/", "/api/v1/nothing-here/"):
        response = app.get(path)
        assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_what_the_database_or_the_answer_could_not_hold_is_a_400_not_a_500(app, customer):
    case = open_failed_case(customer)
    url = f"/api/v1/cases/{case.pk}/codes/"
    for raw in (
        '{"channel": "sms\\u0000"}',  # PostgreSQL cannot store a NUL
        '{"channel": "\\ud800"}',  # nor a lone surrogate; the error could not echo it
        "[" * 20_000 + "]" * 20_000,  # deep enough to exhaust the parser's stack
    ):
        key = str(uuid.uuid4())
        for _try in range(2):  # the retry gets an answer too, not "in use" for a day
            response = app.generic(
                "POST", url, raw, content_type="application/json", HTTP_IDEMPOTENCY_KEY=key
            )
            assert response.status_code == 400, raw[:30]
            assert response.json()["code"] == "parse_error"
    anonymous = APIClient().post(
        "/api/v1/auth/token/",
        json.dumps({"username": "x", "password": "y", "platform": "\ud800"}),
        content_type="application/json",
        HTTP_X_INSTALLATION_ID=INSTALLATION,
    )
    assert anonymous.status_code == 400


def test_a_body_larger_than_any_request_needs_is_refused_unread(app, customer):
    case = open_failed_case(customer)
    huge = json.dumps({"channel": "sms", "code": "1" * 100_000})
    response = app.generic(
        "POST", f"/api/v1/cases/{case.pk}/verification/", huge, content_type="application/json"
    )
    assert (response.status_code, response.json()["code"]) == (413, "body_too_large")


def test_a_passing_refusal_is_not_replayed_to_a_retry_after_the_wait(app, customer):
    case = open_failed_case(customer)
    assert (
        app.post(f"/api/v1/cases/{case.pk}/codes/", {"channel": "sms"}, format="json").status_code
        == 202
    )
    key = str(uuid.uuid4())
    body = {"channel": "sms", "code": "000000"}
    url = f"/api/v1/cases/{case.pk}/verification/"
    first = app.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
    assert first.json()["code"] == "code_invalid"  # an answer: replayed to the same key
    throttled = app.post(url, body, format="json", HTTP_IDEMPOTENCY_KEY=str(uuid.uuid4()))
    assert throttled.json()["code"] == "throttled"
    assert not IdempotencyRecord.objects.filter(response_body__code="throttled").exists()


def test_a_password_change_ends_every_app_session_from_before_it(app, customer, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    assert app.get("/api/v1/credit-lines/").status_code == 200
    time_machine.shift(1)
    customer.set_password("a-new-password-2026")
    customer.save()
    refused = app.get("/api/v1/credit-lines/")
    assert (refused.status_code, refused.json()["code"]) == (401, "session_ended")
    again = APIClient().post(
        "/api/v1/auth/refresh/", {"refresh": app.tokens["refresh"]}, format="json"
    )
    assert again.status_code == 401
    # Signing in with the new password opens a session that works.
    time_machine.shift(1)
    fresh = sign_in(APIClient(), customer, password="a-new-password-2026")
    assert fresh.status_code == 200
    # Saving the user for anything else ends nothing.
    customer.first_name = "Wei"
    customer.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {fresh.json()['access']}", **APP)
    assert client.get("/api/v1/credit-lines/").status_code == 200


def test_a_staff_password_counts_as_a_wrong_one_even_in_the_lock_out(agent):
    client = APIClient()
    answers = [sign_in(client, agent) for _ in range(5)]  # the right password, five times
    assert [a.status_code for a in answers[:4]] == [401] * 4
    assert (answers[4].status_code, answers[4].json()["code"]) == (429, "locked_out")


def test_a_device_token_from_before_a_password_change_passes_nothing(customer, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    device_token = sign_in(APIClient(), customer).json()["device_token"]
    time_machine.shift(1)
    customer.set_password("a-new-password-2026")
    customer.save()
    for n in range(20):
        wrong = APIClient(REMOTE_ADDR=f"198.51.100.{n // 4 + 1}")
        assert sign_in(wrong, customer, password="wrong-password").status_code == 401
    stale = APIClient(REMOTE_ADDR="192.0.2.44").post(
        "/api/v1/auth/token/",
        {"username": customer.username, "password": "a-new-password-2026", "platform": "ios"},
        format="json",
        HTTP_X_INSTALLATION_ID=INSTALLATION,
        HTTP_X_DEVICE_TOKEN=device_token,
    )
    assert (stale.status_code, stale.json()["code"]) == (429, "rate_limited")


def test_a_rehash_of_the_same_password_is_not_a_password_change(app, customer, settings):
    # A hash from an older Django (fewer iterations) is upgraded at the next sign-in.
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    old = PBKDF2PasswordHasher().encode(PASSWORD, "saltsaltsalt", iterations=100_000)
    type(customer).objects.filter(pk=customer.pk).update(password=old)
    customer.refresh_from_db()
    before = customer.password_changed_at
    assert sign_in(APIClient(), customer, installation="inst-second-phone-0001").status_code == 200
    customer.refresh_from_db()
    assert customer.password != old  # upgraded ...
    assert customer.password_changed_at == before  # ... but not changed
    assert app.get("/api/v1/credit-lines/").status_code == 200
