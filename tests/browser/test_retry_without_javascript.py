"""A customer rescues a failed activation in a real browser: Chromium, JavaScript off, a phone."""

import pytest
from playwright.sync_api import expect

from tests.factories import CustomerFactory, open_failed_case

from .conftest import PHONE, SMALL_PHONE, last_code, no_horizontal_scroll

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_customer_retries_on_a_phone_without_javascript(browser, live_server, core, sms_file):
    customer = CustomerFactory()
    case = open_failed_case(customer)
    page = browser.new_context(java_script_enabled=False, viewport=PHONE, locale="en-US").new_page()

    page.goto(live_server.url + "/")
    page.get_by_role("link", name="Sign in").click()
    page.get_by_label("Phone number or username").fill(customer.username)
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_text("Activation failed.")).to_be_visible()
    page.get_by_role("link", name="Retry activation").click()
    expect(page.get_by_role("heading", name="Your code expired")).to_be_visible()
    page.get_by_role("button", name="Send code").click()

    page.get_by_label("Verification code").fill(last_code(sms_file, str(customer.phone_number)))
    page.get_by_role("button", name="Verify and activate").click()

    expect(page.get_by_text("Activation in progress")).to_be_visible()
    # No script runs: only the page's own refresh can bring the news.
    expect(page.get_by_text("Your credit line is active.")).to_be_visible(timeout=30_000)
    case.refresh_from_db()
    assert case.state == "activated"
    assert core.stats()["activations"] == {case.credit_line.reference: 1}


def test_the_whole_retry_in_chinese_at_320_pixels_with_the_keyboard_alone(
    browser, live_server, core, sms_file
):
    customer = CustomerFactory()
    case = open_failed_case(customer)
    context = browser.new_context(
        java_script_enabled=False,
        viewport=SMALL_PHONE,
        locale="zh-CN",
        extra_http_headers={"Accept-Language": "zh-Hans,zh;q=0.9"},
    )
    page = context.new_page()
    page.goto(live_server.url + "/accounts/login/")
    assert no_horizontal_scroll(page)

    page.get_by_label("手机号码或用户名").focus()
    page.keyboard.type(customer.username)
    page.keyboard.press("Tab")
    page.keyboard.type("correct horse battery staple")
    page.keyboard.press("Enter")

    expect(page.get_by_text("激活失败。")).to_be_visible()
    assert no_horizontal_scroll(page)
    page.get_by_role("link", name="重新激活").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="您的验证码已过期")).to_be_visible()
    assert no_horizontal_scroll(page)
    page.get_by_role("button", name="发送验证码").focus()
    page.keyboard.press("Enter")

    expect(page.get_by_label("验证码")).to_be_focused()
    assert no_horizontal_scroll(page)
    page.keyboard.type(last_code(sms_file, str(customer.phone_number)))
    page.keyboard.press("Enter")

    expect(page.get_by_text("正在激活")).to_be_visible()
    assert no_horizontal_scroll(page)
    expect(page.get_by_text("您的信用额度已激活。")).to_be_visible(timeout=30_000)
    case.refresh_from_db()
    assert case.state == "activated"
    context.close()
