import pytest
from django.urls import reverse

from activation.models import CaseEvent, CaseState, CoreRequest
from tests.factories import PASSWORD, open_failed_case
from tests.fixtures import last_sms_code
from verification.sms import LocmemBackend

pytestmark = pytest.mark.django_db


@pytest.fixture
def signed_in(client, customer):
    client.force_login(customer)
    return client


def retry_url(case):
    return reverse("activation:retry", args=[case.pk])


def test_sign_in_page_has_the_sign_in_button(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert "Sign in" in response.text


def test_a_customer_signs_in_and_sees_why_activation_failed(client, customer):
    open_failed_case(customer)
    response = client.post(
        "/accounts/login/", {"username": customer.username, "password": PASSWORD}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/activation/"
    assert "Activation failed." in response.text
    assert "The code expired" in response.text
    assert "Retry activation" in response.text


def test_the_whole_retry_flow_submits_once(signed_in, customer, django_capture_on_commit_callbacks):
    case = open_failed_case(customer)
    page = signed_in.get(retry_url(case))
    assert "Send code" in page.text
    assert "138****" in page.text

    with django_capture_on_commit_callbacks(execute=True):
        response = signed_in.post(retry_url(case), {"action": "send"}, follow=True)
    assert "Verification code" in response.text
    assert "Verify and activate" in response.text
    code = last_sms_code(str(customer.phone_number))

    with django_capture_on_commit_callbacks(execute=False):
        response = signed_in.post(retry_url(case), {"action": "verify", "code": code})
        again = signed_in.post(retry_url(case), {"action": "verify", "code": code})
    assert response.status_code == again.status_code == 302
    assert response["Location"] == again["Location"] == f"/activation/{case.pk}/"
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING
    assert CoreRequest.objects.filter(case=case).count() == 1

    progress = signed_in.get(f"/activation/{case.pk}/")
    assert "Activation in progress" in progress.text
    assert 'http-equiv="refresh"' in progress.text
    assert "failed" not in progress.text.lower()


def test_a_wrong_code_shows_a_form_error_and_keeps_the_case_open(
    signed_in, customer, django_capture_on_commit_callbacks
):
    case = open_failed_case(customer)
    with django_capture_on_commit_callbacks(execute=True):
        signed_in.post(retry_url(case), {"action": "send"})
    wrong = f"{(int(last_sms_code()) + 1) % 1_000_000:06d}"
    response = signed_in.post(retry_url(case), {"action": "verify", "code": wrong})
    assert response.status_code == 200
    assert "That code is not right" in response.text
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION
    assert CaseEvent.objects.filter(case=case, kind="verification.failed").count() == 1


def test_an_empty_code_is_a_form_error_not_a_500(signed_in, customer):
    case = open_failed_case(customer)
    response = signed_in.post(retry_url(case), {"action": "verify", "code": ""})
    assert response.status_code == 200
    assert "Enter the code from the SMS." in response.text or "Send code" in response.text


def test_a_resend_inside_the_cooldown_says_how_long_to_wait(
    signed_in, customer, django_capture_on_commit_callbacks
):
    case = open_failed_case(customer)
    with django_capture_on_commit_callbacks(execute=True):
        signed_in.post(retry_url(case), {"action": "send"})
        response = signed_in.post(retry_url(case), {"action": "send"}, follow=True)
    assert "Please wait" in response.text
    assert len(LocmemBackend.outbox) == 1


def test_another_customers_case_does_not_exist_for_me(signed_in, other_customer):
    case = open_failed_case(other_customer)
    assert signed_in.get(f"/activation/{case.pk}/").status_code == 404
    assert signed_in.post(retry_url(case), {"action": "send"}).status_code == 404
    assert not LocmemBackend.outbox


def test_pages_need_sign_in(client, customer):
    case = open_failed_case(customer)
    for url in ("/activation/", f"/activation/{case.pk}/", retry_url(case)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_help_explains_every_failure_reason(client):
    response = client.get("/help/")
    assert response.status_code == 200
    for anchor in ("code_expired", "core_unavailable", "sync_timeout", "risk_review"):
        assert f'id="{anchor}"' in response.text


def test_pages_render_in_chinese_from_accept_language(client):
    response = client.get("/accounts/login/", headers={"accept-language": "zh-Hans"})
    assert "登录" in response.text
