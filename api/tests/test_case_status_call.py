"""The app's case-status call reads its session in the statement that reads the case: one round
trip. Every way a session ends still stops the very next call, exactly as before."""

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from activation.tests.helpers import submitted_case
from activation.tests.test_status_page import core_reports_active
from api.authentication import TOUCH_EVERY
from api.models import AppSession
from api.tests import test_customer_api
from api.tests.test_customer_api import APP, sign_in
from api.tests.test_staff_api import client_for
from tests.factories import open_failed_case

pytestmark = pytest.mark.django_db

QUERY_BUDGET = 5
app = test_customer_api.app  # the signed-in app client (a fixture)
STATUS_QUERIES = 1  # the case, its line, the customer and the live session, in one statement


@pytest.fixture
def case(customer):
    return open_failed_case(customer)


def status(client, case):
    return client.get(f"/api/v1/cases/{case.pk}/")


def refused(response, code: str = "session_ended") -> bool:
    return (response.status_code, response.json()["code"]) == (401, code)


def test_the_status_call_stays_within_its_query_budget(app, case, django_assert_max_num_queries):
    status(app, case)  # the session's last_used_at was just written at sign-in
    with django_assert_max_num_queries(QUERY_BUDGET):
        assert status(app, case).status_code == 200
    with CaptureQueriesContext(connection) as queries:
        answer = status(app, case)
    assert answer.status_code == 200
    assert answer.json()["id"] == case.pk and answer.json()["state"] == "failed"
    assert len(queries) == STATUS_QUERIES


def test_the_status_call_answers_what_the_case_is_in_every_state(
    app, customer, django_capture_on_commit_callbacks
):
    case, _request = submitted_case(customer, django_capture_on_commit_callbacks)
    assert status(app, case).json()["in_progress"] is True
    core_reports_active(case)
    body = status(app, case).json()
    assert (body["state"], body["in_progress"], body["can_retry"]) == ("activated", False, False)


def test_a_revoked_session_is_refused_on_the_very_next_call(app, case, customer):
    assert status(app, case).status_code == 200
    session = app.tokens["session"]["id"]
    assert app.delete(f"/api/v1/auth/sessions/{session}/").status_code == 204
    assert refused(status(app, case))


def test_signing_in_again_on_the_installation_ends_the_old_session_at_once(app, case, customer):
    assert status(app, case).status_code == 200
    assert sign_in(APIClient(), customer).status_code == 200
    assert refused(status(app, case))


def test_a_reused_refresh_token_ends_the_session_for_the_next_call(app, case):
    refresh = app.tokens["refresh"]
    rotated = APIClient().post("/api/v1/auth/refresh/", {"refresh": refresh}, format="json")
    assert rotated.status_code == 200
    cache.clear()  # past the grace period in which the same token gets the same answer
    again = APIClient().post("/api/v1/auth/refresh/", {"refresh": refresh}, format="json")
    assert again.status_code == 401
    assert refused(status(app, case))


def test_a_deactivated_customer_is_refused_on_the_very_next_call(app, case, customer):
    assert status(app, case).status_code == 200
    customer.is_active = False
    customer.save()
    assert refused(status(app, case))


def test_a_password_change_is_refused_on_the_very_next_call(app, case, customer, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    assert status(app, case).status_code == 200
    time_machine.shift(1)
    customer.set_password("a-new-password-2026")
    customer.save()
    assert refused(status(app, case))
    # Signing in with the new password opens a session that works.
    fresh = APIClient()
    tokens = sign_in(fresh, customer, password="a-new-password-2026").json()
    fresh.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}", **APP)
    assert status(fresh, case).status_code == 200


def test_a_customer_made_staff_is_refused_on_the_very_next_call(app, case, customer):
    assert status(app, case).status_code == 200
    customer.is_staff = True
    customer.save()
    assert refused(status(app, case))


def test_an_expired_access_token_is_refused(app, case, time_machine):
    time_machine.move_to(timezone.now() + timedelta(days=1), tick=False)
    assert refused(status(app, case), "token_not_valid")


def test_a_token_from_another_installation_is_refused(app, case):
    app.credentials(
        HTTP_AUTHORIZATION=f"Bearer {app.tokens['access']}",
        HTTP_X_INSTALLATION_ID="inst-stolen-elsewhere-000",
    )
    assert refused(status(app, case), "installation_mismatch")


def test_another_customers_case_does_not_exist_even_with_a_live_session(app, other_customer):
    theirs = open_failed_case(other_customer)
    answer = status(app, theirs)
    assert (answer.status_code, answer.json()["code"]) == (404, "case_not_found")


def test_another_customers_session_does_not_open_my_case(case, other_customer):
    stranger = APIClient()
    tokens = sign_in(stranger, other_customer, installation="inst-stranger-00000000").json()
    stranger.credentials(
        HTTP_AUTHORIZATION=f"Bearer {tokens['access']}",
        HTTP_X_INSTALLATION_ID="inst-stranger-00000000",
    )
    assert status(stranger, case).status_code == 404


def test_a_staff_token_does_not_open_the_status_call(case, agent):
    answer = client_for(agent, scopes=["read"]).get(f"/api/v1/cases/{case.pk}/")
    assert answer.status_code == 403


def forged(user, session: AppSession) -> APIClient:
    """A client with an access token we sign ourselves: any user id with any session id."""
    access = AccessToken.for_user(user)
    access["sid"] = session.pk
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {access}", HTTP_X_INSTALLATION_ID=session.installation_id
    )
    return client


def test_a_token_naming_another_customers_live_session_opens_nothing(
    app, case, customer, other_customer
):
    sign_in(APIClient(), other_customer, installation="inst-theirs-000000000")
    theirs = AppSession.objects.get(user=other_customer)
    their_case = open_failed_case(other_customer)
    # My user id with their session, on their case and on mine: the session is not mine.
    assert refused(status(forged(customer, theirs), their_case))
    assert refused(status(forged(customer, theirs), case))
    # Sanity: the same forging with matching ids works, so the refusals above are the check's.
    assert status(forged(other_customer, theirs), their_case).status_code == 200


def test_a_session_cookie_does_not_open_the_status_call(client, customer, case):
    client.force_login(customer)
    answer = client.get(f"/api/v1/cases/{case.pk}/", **APP)
    assert answer.status_code == 401


def test_the_status_call_keeps_the_session_marked_as_used(app, case, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    session = AppSession.objects.get(pk=app.tokens["session"]["id"])
    time_machine.shift(TOUCH_EVERY + timedelta(seconds=1))
    assert status(app, case).status_code == 200
    session.refresh_from_db()
    assert session.last_used_at == timezone.now()


def test_an_unknown_case_is_a_404_and_an_ended_session_still_a_401(app, case, customer):
    missing = app.get(f"/api/v1/cases/{case.pk + 1000}/")
    assert (missing.status_code, missing.json()["code"]) == (404, "case_not_found")
    AppSession.objects.filter(user=customer).update(revoked_at=timezone.now())
    assert refused(app.get(f"/api/v1/cases/{case.pk + 1000}/"))
    assert refused(status(app, case))
