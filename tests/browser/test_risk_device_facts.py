"""The device-facts script in a real browser: it adds what it can, and nothing needs it."""

import pytest
from playwright.sync_api import expect

from risk.models import Evaluation, Moment
from risk.tests.conftest import load_default_rule_set
from tests.factories import CustomerFactory, open_failed_case

from .conftest import PHONE, last_code, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def default_rule_set(transactional_db):
    load_default_rule_set()  # an earlier transactional test's flush may have removed it


def recorded(customer, moment: str) -> Evaluation:
    return (
        Evaluation.objects.filter(customer=customer, moment=moment)
        .select_related("device")
        .latest("pk")
    )


def test_with_javascript_the_sign_in_and_code_request_carry_the_phones_facts(
    browser, live_server, sms_file
):
    customer = CustomerFactory()
    case = open_failed_case(customer)
    context = browser.new_context(
        viewport=PHONE,
        screen={"width": 412, "height": 915},
        device_scale_factor=2.625,
        has_touch=True,
        is_mobile=True,
        timezone_id="Asia/Shanghai",
        locale="zh-CN",
        extra_http_headers={"Accept-Language": "zh-Hans,zh;q=0.9"},
    )
    page = context.new_page()
    sign_in(page, live_server.url, customer.username, button="登录")
    expect(page.get_by_text("激活失败。")).to_be_visible()

    sign_in_facts = recorded(customer, Moment.SIGN_IN)
    assert "device_facts" not in sign_in_facts.signals  # well formed
    attributes = sign_in_facts.device.attributes
    assert attributes["screen"] == "412x915"
    assert attributes["tz"] == "Asia/Shanghai"
    assert attributes["dpr"] == "2.63"
    assert int(attributes["touch"]) > 0
    assert attributes["language"].startswith("zh")

    page.goto(f"{live_server.url}/activation/{case.pk}/retry/")
    page.get_by_role("button", name="发送验证码").click()
    expect(page.get_by_label("验证码")).to_be_visible()
    assert last_code(sms_file, str(customer.phone_number))
    request = recorded(customer, Moment.CODE_REQUEST)
    assert request.device_id == sign_in_facts.device_id
    assert request.signals["device_cookie"] == "valid"
    assert request.device.attributes["screen"] == "412x915"
    context.close()


def test_without_javascript_sign_in_and_a_code_request_still_work(browser, live_server, sms_file):
    customer = CustomerFactory()
    case = open_failed_case(customer)
    context = browser.new_context(java_script_enabled=False, viewport=PHONE, locale="en-US")
    page = context.new_page()
    sign_in(page, live_server.url, customer.username)
    expect(page.get_by_text("Activation failed.")).to_be_visible()

    page.goto(f"{live_server.url}/activation/{case.pk}/retry/")
    page.get_by_role("button", name="Send code").click()
    expect(page.get_by_label("Verification code")).to_be_visible()
    assert last_code(sms_file, str(customer.phone_number))

    for moment in (Moment.SIGN_IN, Moment.CODE_REQUEST):
        evaluation = recorded(customer, moment)
        assert "device_facts" not in evaluation.signals  # an empty field is not malformed
        assert evaluation.decision == "allow"
        assert not {"screen", "tz", "touch"} & set(evaluation.device.attributes)
    context.close()
