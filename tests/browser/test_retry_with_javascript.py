"""With JavaScript on, progress updates in place and the resend countdown runs."""

import pytest
from playwright.sync_api import expect

from tests.factories import CustomerFactory, open_failed_case

from .conftest import PHONE, last_code, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_progress_updates_in_place(browser, live_server, core, sms_file, settings):
    settings.ACTIVATION_PROGRESS_REFRESH_SECONDS = 1
    customer = CustomerFactory()
    case = open_failed_case(customer)
    page = browser.new_context(viewport=PHONE, locale="en-US").new_page()
    sign_in(page, live_server.url, customer.username)
    page.goto(f"{live_server.url}/activation/{case.pk}/retry/")
    page.get_by_role("button", name="Send code").click()

    countdown = page.locator("[data-countdown]")
    first = int(countdown.inner_text())
    page.wait_for_timeout(2100)
    assert int(countdown.inner_text()) <= first - 2  # animated by the script

    page.get_by_label("Verification code").fill(last_code(sms_file, str(customer.phone_number)))
    page.get_by_role("button", name="Verify and activate").click()
    expect(page.get_by_text("Activation in progress")).to_be_visible()
    page.evaluate("window.stillTheSamePage = true")

    expect(page.get_by_text("Your credit line is active.")).to_be_visible(timeout=30_000)
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place, not reloaded
    assert page.locator("#case-status").get_attribute("data-state") == "activated"
