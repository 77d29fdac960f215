import re
import uuid

import pytest
import time_machine
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from activation.models import CaseEvent, CaseState, CoreRequest
from tests.factories import open_failed_case
from tests.fixtures import last_sms_code
from verification.sms import LocmemBackend

pytestmark = pytest.mark.django_db


def retry_url(case):
    return reverse("activation:retry", args=[case.pk])


def send(client, case, channel="sms", **kwargs):
    return client.post(retry_url(case), {"action": "send", "channel": channel}, **kwargs)


def verify(client, case, code, submission_id=None):
    data = {"action": "verify", "code": code, "submission_id": str(submission_id or uuid.uuid4())}
    return client.post(retry_url(case), data)


def test_the_whole_retry_flow_submits_once(signed_in, customer, django_capture_on_commit_callbacks):
    case = open_failed_case(customer)
    page = signed_in.get(retry_url(case))
    assert "Send code" in page.text
    assert "138****" in page.text

    response = send(signed_in, case, follow=True)
    assert "Verification code" in response.text
    assert "Verify and activate" in response.text
    code = last_sms_code(str(customer.phone_number))

    with django_capture_on_commit_callbacks(execute=False):
        response = verify(signed_in, case, code)
        again = verify(signed_in, case, code)
    assert response.status_code == again.status_code == 302
    assert response["Location"] == again["Location"] == f"/activation/{case.pk}/"
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING
    assert CoreRequest.objects.filter(case=case).count() == 1

    progress = signed_in.get(f"/activation/{case.pk}/")
    assert "Activation in progress" in progress.text
    assert '<noscript><meta http-equiv="refresh"' in progress.text
    assert "failed" not in progress.text.lower()


def test_the_same_form_submitted_twice_gets_the_same_answer(
    signed_in, customer, django_capture_on_commit_callbacks
):
    case = open_failed_case(customer)
    send(signed_in, case)
    code = last_sms_code()
    submission = uuid.uuid4()
    with django_capture_on_commit_callbacks(execute=False):
        first = verify(signed_in, case, code, submission)
        second = verify(signed_in, case, code, submission)
    assert first.status_code == second.status_code == 302
    assert CoreRequest.objects.filter(case=case).count() == 1
    assert CaseEvent.objects.filter(case=case, kind="verification.succeeded").count() == 1


def test_a_wrong_code_submitted_twice_counts_once(signed_in, customer):
    case = open_failed_case(customer)
    send(signed_in, case)
    submission = uuid.uuid4()
    wrong = f"{(int(last_sms_code()) + 1) % 1_000_000:06d}"
    for _tap in range(2):
        response = verify(signed_in, case, wrong, submission)
        assert "That code is not right" in response.text
    assert CaseEvent.objects.filter(case=case, kind="verification.failed").count() == 1


def test_a_wrong_code_shows_a_form_error_and_keeps_the_case_open(signed_in, customer):
    case = open_failed_case(customer)
    send(signed_in, case)
    wrong = f"{(int(last_sms_code()) + 1) % 1_000_000:06d}"
    response = verify(signed_in, case, wrong)
    assert response.status_code == 200
    assert "That code is not right" in response.text
    assert 'aria-invalid="true"' in response.text
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION
    assert CaseEvent.objects.filter(case=case, kind="verification.failed").count() == 1


def test_five_wrong_codes_burn_the_code_and_offer_a_new_one(signed_in, customer):
    case = open_failed_case(customer)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        send(signed_in, case)
        wrong = f"{(int(last_sms_code()) + 1) % 1_000_000:06d}"
        for _attempt in range(5):
            response = verify(signed_in, case, wrong)
            clock.shift(30)
        page = signed_in.get(response["Location"]) if response.status_code == 302 else response
        assert "no longer works after too many wrong tries" in page.text
        assert "Too many wrong codes" in page.text
        assert "Send code" in page.text
        case.refresh_from_db()
        assert (case.state, case.failure_reason) == (CaseState.FAILED, "too_many_attempts")
        response = send(signed_in, case, follow=True)
        assert "Verification code" in response.text
        assert len(LocmemBackend.outbox) == 2


def test_repeated_lock_outs_hand_the_case_to_staff(signed_in, customer, settings):
    settings.VERIFICATION_LOCKOUTS_BEFORE_REVIEW = 2
    settings.VERIFICATION_THROTTLE_FACTOR = 0  # this test is about lock-outs, not the throttle
    case = open_failed_case(customer)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for _lockout in range(2):
            send(signed_in, case)
            wrong = f"{(int(last_sms_code()) + 1) % 1_000_000:06d}"
            for _attempt in range(5):
                verify(signed_in, case, wrong)
                clock.shift(1)
    case.refresh_from_db()
    assert (case.state, case.failure_reason) == (CaseState.NEEDS_REVIEW, "too_many_attempts")
    page = signed_in.get(f"/activation/{case.pk}/")
    assert "Our staff are looking at your activation" in page.text


def test_an_empty_code_is_a_form_error_not_a_500(signed_in, customer):
    case = open_failed_case(customer)
    send(signed_in, case)
    response = signed_in.post(retry_url(case), {"action": "verify", "code": ""})
    assert response.status_code == 200
    assert "Enter the code you received." in response.text


def test_a_resend_inside_the_cooldown_says_how_long_to_wait(signed_in, customer):
    case = open_failed_case(customer)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        page = send(signed_in, case, follow=True)
        assert "You can ask for a new code in" in page.text
        assert "data-countdown>60<" in page.text
        clock.shift(15)
        response = signed_in.post(
            retry_url(case), {"action": "resend", "channel": "sms"}, follow=True
        )
        assert "Please wait 45 seconds" in response.text
        assert len(LocmemBackend.outbox) == 1
        old = last_sms_code()
        clock.shift(50)
        signed_in.post(retry_url(case), {"action": "resend", "channel": "sms"})
        assert len(LocmemBackend.outbox) == 2
        if last_sms_code() != old:
            response = verify(signed_in, case, old)
            assert "That code is not right" in response.text


def test_the_customer_can_choose_e_mail(signed_in, customer):
    customer.email = "zhang.wei@example.com"
    customer.save()
    case = open_failed_case(customer)
    page = signed_in.get(retry_url(case))
    assert "z***@example.com" in page.text
    response = send(signed_in, case, channel="email", follow=True)
    assert "z***@example.com" in response.text
    assert mail.outbox[-1].to == ["zhang.wei@example.com"]
    assert not LocmemBackend.outbox


def test_an_sms_gateway_failure_explains_and_offers_the_other_channels(
    signed_in, customer, settings
):
    settings.SMS_BACKEND = "verification.sms.HttpGatewayBackend"
    settings.SMS_GATEWAY_URL = "http://127.0.0.1:9/send"  # nothing listens there
    settings.SMS_GATEWAY_RETRIES = 0
    customer.email = "zhang.wei@example.com"
    customer.save()
    case = open_failed_case(customer)
    response = send(signed_in, case, follow=True)
    assert "We could not send a code by SMS" in response.text
    assert "We could not deliver your code" in response.text
    assert re.search(r'<input[^>]*value="email"[^>]*checked', response.text)
    case.refresh_from_db()
    assert (case.state, case.failure_reason) == (CaseState.FAILED, "delivery_failed")


def test_a_changed_ip_address_does_not_fail_verification_and_is_recorded(
    signed_in, customer, django_capture_on_commit_callbacks
):
    case = open_failed_case(customer)
    signed_in.post(retry_url(case), {"action": "send", "channel": "sms"}, REMOTE_ADDR="10.1.2.3")
    with django_capture_on_commit_callbacks(execute=False):
        response = signed_in.post(
            retry_url(case),
            {"action": "verify", "code": last_sms_code(), "submission_id": str(uuid.uuid4())},
            REMOTE_ADDR="192.0.2.77",
        )
    assert response.status_code == 302
    event = CaseEvent.objects.get(case=case, kind="verification.succeeded")
    assert event.data["ip_changed"] == {"from": "10.1.2.3", "to": "192.0.2.77"}
    assert event.ip_address == "192.0.2.77"


def test_the_status_endpoint_reports_progress(
    signed_in, customer, django_capture_on_commit_callbacks
):
    case = open_failed_case(customer)
    send(signed_in, case)
    with django_capture_on_commit_callbacks(execute=False):
        verify(signed_in, case, last_sms_code())
    body = signed_in.get(f"/activation/{case.pk}/status/").json()
    assert body["state"] == "submitting"
    assert body["in_progress"] is True
    assert "Activation in progress" in body["html"]


def test_another_customers_case_does_not_exist_for_me(signed_in, other_customer):
    case = open_failed_case(other_customer)
    assert signed_in.get(f"/activation/{case.pk}/").status_code == 404
    assert signed_in.get(f"/activation/{case.pk}/status/").status_code == 404
    assert send(signed_in, case).status_code == 404
    assert not LocmemBackend.outbox


def test_a_code_for_another_customers_case_is_not_found(signed_in, other_customer):
    case = open_failed_case(other_customer)
    session = signed_in.session
    session[f"verification_channel:{case.pk}"] = "sms"  # the fast path trusts only the case id
    session.save()
    assert verify(signed_in, case, "123456").status_code == 404
    case.refresh_from_db()
    assert case.state == CaseState.FAILED
    assert not CaseEvent.objects.filter(case=case, kind__startswith="verification.").exists()


def test_a_code_for_a_case_staff_took_over_changes_nothing(signed_in, customer):
    case = open_failed_case(customer)
    send(signed_in, case)
    code = last_sms_code()
    case.state = CaseState.NEEDS_REVIEW
    case.save(update_fields=["state"])
    response = verify(signed_in, case, code)
    assert response.status_code == 302
    assert response["Location"] == f"/activation/{case.pk}/"
    case.refresh_from_db()
    assert case.state == CaseState.NEEDS_REVIEW
    assert not CoreRequest.objects.filter(case=case).exists()


def test_pages_need_sign_in(client, customer):
    case = open_failed_case(customer)
    for url in ("/activation/", f"/activation/{case.pk}/", retry_url(case), "/accounts/profile/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_help_explains_every_failure_reason(client):
    response = client.get("/help/")
    assert response.status_code == 200
    for reason in ("code_expired", "core_unavailable", "sync_timeout", "risk_review"):
        assert f'id="{reason}"' in response.text


def test_the_failure_links_to_its_help_section(signed_in, customer):
    open_failed_case(customer, reason="core_unavailable")
    case = customer.credit_lines.get().cases.get()
    page = signed_in.get(f"/activation/{case.pk}/")
    assert 'href="/help/#core_unavailable"' in page.text


def test_pages_render_in_chinese_from_accept_language(client):
    response = client.get("/accounts/login/", headers={"accept-language": "zh-Hans"})
    assert "登录" in response.text


def test_the_chosen_language_is_remembered(client):
    response = client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/help/"}, follow=True)
    assert "各提示信息的含义" in response.text
    assert "登录" in client.get("/accounts/login/", headers={"accept-language": "en"}).text


def test_a_code_entered_before_any_was_sent_is_a_form_error(signed_in, customer):
    case = open_failed_case(customer)
    response = verify(signed_in, case, "123456")
    assert response.status_code == 200
    assert "There is no code waiting for this activation" in response.text
