"""The customer's status page and the JSON that pages poll: what they show beside the case (the
emergency switch, the passkey offer) is read with the case, as fresh as before, in few queries."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django_otp_webauthn.models import WebAuthnCredential

from activation import selectors
from activation.models import ActivationCase, ActorType, CaseState
from activation.services.emergency import core_submissions_paused, set_core_submissions_paused
from activation.tests.helpers import submitted_case
from activation.transitions import transition
from tests.factories import open_failed_case
from verification import passkeys

pytestmark = pytest.mark.django_db

# The status views' whole budget; the exact count below catches any growth within it.
QUERY_BUDGET = 5
# The user (read by the middleware for the session) and the case with everything it shows.
STATUS_QUERIES = 2


@pytest.fixture
def submitting(customer, django_capture_on_commit_callbacks):
    case, _request = submitted_case(customer, django_capture_on_commit_callbacks)
    return case


@pytest.fixture
def activated(customer, django_capture_on_commit_callbacks):
    case, _request = submitted_case(customer, django_capture_on_commit_callbacks)
    return core_reports_active(case)


def core_reports_active(case):
    """The core's word that the line is active, as a callback or a poll records it."""
    with transaction.atomic():
        locked = ActivationCase.objects.select_for_update().get(pk=case.pk)
        transition(locked, to=CaseState.ACTIVATED, actor_type=ActorType.CORE)
    return locked


def add_passkey(user, *, confirmed: bool = True) -> None:
    WebAuthnCredential.objects.create(
        user=user,
        name="My phone",
        credential_id=b"made-elsewhere",
        credential_id_sha256=WebAuthnCredential.get_credential_id_sha256(b"made-elsewhere"),
        public_key=b"not-used-here",
        aaguid="00000000-0000-0000-0000-000000000000",
        confirmed=confirmed,
    )


def pause(supervisor, paused: bool) -> None:
    set_core_submissions_paused(paused=paused, actor=supervisor, reason="core outage drill")


def status_urls(case) -> list[str]:
    return [f"/activation/{case.pk}/", f"/activation/{case.pk}/status/"]


def queries_of(client, url: str) -> int:
    client.get(url)  # the session's first read warms the cache, as after any earlier page
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


@pytest.mark.parametrize("state", ["failed", "submitting", "activated"])
def test_the_status_page_and_its_json_stay_within_the_query_budget_in_every_state(
    request, signed_in, customer, supervisor, state, django_assert_max_num_queries
):
    case = open_failed_case(customer) if state == "failed" else request.getfixturevalue(state)
    pause(supervisor, True)  # the switch on: the page says the request is queued
    for url in status_urls(case):
        with django_assert_max_num_queries(QUERY_BUDGET):
            assert signed_in.get(url).status_code == 200
        assert queries_of(signed_in, url) == STATUS_QUERIES, url


def test_a_pause_is_seen_by_the_very_next_poll_and_so_is_the_resume(
    signed_in, submitting, supervisor
):
    page, poll = status_urls(submitting)
    queued = "It will go through automatically"
    assert queued not in signed_in.get(poll).json()["html"]
    pause(supervisor, True)
    assert queued in signed_in.get(poll).json()["html"]
    assert queued in signed_in.get(page).text
    pause(supervisor, False)
    assert queued not in signed_in.get(poll).json()["html"]
    assert queued not in signed_in.get(page).text


def test_a_pause_says_nothing_on_a_case_that_is_not_being_submitted(
    signed_in, customer, supervisor
):
    case = open_failed_case(customer)
    pause(supervisor, True)
    body = signed_in.get(f"/activation/{case.pk}/status/").json()
    assert body["state"] == "failed"
    assert "It will go through automatically" not in body["html"]


def test_the_passkey_offer_follows_the_customers_passkeys(signed_in, customer, activated):
    offer = "Next time, use your fingerprint"
    page, poll = status_urls(activated)
    assert offer in signed_in.get(page).text
    add_passkey(customer, confirmed=False)  # an unfinished one does not count
    assert offer in signed_in.get(poll).json()["html"]
    WebAuthnCredential.objects.filter(user=customer).update(confirmed=True)
    assert offer not in signed_in.get(page).text
    assert offer not in signed_in.get(poll).json()["html"]


def test_another_customers_passkey_does_not_hide_the_offer(signed_in, activated, other_customer):
    add_passkey(other_customer)
    assert "Next time, use your fingerprint" in signed_in.get(status_urls(activated)[0]).text


def test_the_folded_reads_agree_with_the_functions_they_stand_for(customer, submitting, supervisor):
    for paused in (False, True, False):
        pause(supervisor, paused)
        case = selectors.case_status_for_customer(customer, submitting.pk)
        assert case.core_paused is core_submissions_paused() is paused
    for confirmed, expected in ((None, False), (False, False), (True, True)):
        if confirmed is not None:
            WebAuthnCredential.objects.filter(user=customer).delete()
            add_passkey(customer, confirmed=confirmed)
        case = selectors.case_status_for_customer(customer, submitting.pk)
        assert case.customer_has_passkey is passkeys.has_passkey(customer) is expected
