"""Resending, double submits and burned codes, as a customer meets them in the browser."""

import pytest
from playwright.sync_api import expect

from activation.models import CoreRequest
from tests.factories import CustomerFactory, open_failed_case

from .conftest import PHONE, last_code, sign_in, sms_codes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def retry_page(browser, live_server):
    def open_page(customer, case, *, javascript: bool = False):
        context = browser.new_context(java_script_enabled=javascript, viewport=PHONE)
        page = context.new_page()
        sign_in(page, live_server.url, customer.username)
        page.goto(f"{live_server.url}/activation/{case.pk}/retry/")
        return page

    return open_page


def test_a_resend_inside_the_cooldown_is_refused_and_after_it_the_old_code_is_dead(
    retry_page, sms_file, settings
):
    settings.VERIFICATION_RESEND_COOLDOWN_SECONDS = 3
    customer = CustomerFactory()
    case = open_failed_case(customer)
    page = retry_page(customer, case)
    page.get_by_role("button", name="Send code").click()
    old = last_code(sms_file, str(customer.phone_number))

    page.get_by_role("button", name="Send a new code").click()
    expect(page.get_by_text("Please wait")).to_be_visible()
    expect(page.get_by_text("seconds before asking for another code")).to_be_visible()
    assert len(sms_codes(sms_file, str(customer.phone_number))) == 1

    page.wait_for_timeout(3100)
    page.get_by_role("button", name="Send a new code").click()
    expect(page.get_by_text("We sent you a code.")).to_be_visible()
    new = last_code(sms_file, str(customer.phone_number))
    assert len(sms_codes(sms_file, str(customer.phone_number))) == 2
    if new != old:
        page.get_by_label("Verification code").fill(old)
        page.get_by_role("button", name="Verify and activate").click()
        expect(page.get_by_text("That code is not right")).to_be_visible()


def test_the_same_right_code_submitted_twice_activates_once_and_both_succeed(
    retry_page, core, sms_file
):
    customer = CustomerFactory()
    case = open_failed_case(customer)
    first = retry_page(customer, case)
    first.get_by_role("button", name="Send code").click()
    # The same form, open twice: a double tap, or a browser resending after a timeout.
    second = first.context.new_page()
    second.goto(first.url)
    code = last_code(sms_file, str(customer.phone_number))
    for page in (first, second):
        page.get_by_label("Verification code").fill(code)
    first.get_by_role("button", name="Verify and activate").click()
    second.get_by_role("button", name="Verify and activate").click()

    for page in (first, second):
        expect(page.get_by_text("Activation in progress")).to_be_visible()
        expect(page.get_by_text("not right")).to_have_count(0)
    expect(first.get_by_text("Your credit line is active.")).to_be_visible(timeout=30_000)
    assert CoreRequest.objects.filter(case=case).count() == 1
    assert core.stats()["activations"] == {case.credit_line.reference: 1}


def test_five_wrong_codes_burn_the_code_and_a_new_one_is_offered(retry_page, sms_file, settings):
    settings.VERIFICATION_THROTTLE_FACTOR = 0  # typing speed is not what this test is about
    customer = CustomerFactory()
    case = open_failed_case(customer)
    page = retry_page(customer, case)
    page.get_by_role("button", name="Send code").click()
    wrong = f"{(int(last_code(sms_file, str(customer.phone_number))) + 1) % 1_000_000:06d}"
    for _attempt in range(4):
        page.get_by_label("Verification code").fill(wrong)
        page.get_by_role("button", name="Verify and activate").click()
        expect(page.get_by_text("That code is not right")).to_be_visible()
    page.get_by_label("Verification code").fill(wrong)
    page.get_by_role("button", name="Verify and activate").click()

    expect(page.get_by_text("That code no longer works after too many wrong tries")).to_be_visible()
    expect(page.get_by_role("heading", name="Too many wrong codes")).to_be_visible()
    page.get_by_role("button", name="Send code").click()
    expect(page.get_by_label("Verification code")).to_be_visible()
    assert len(sms_codes(sms_file, str(customer.phone_number))) == 2
