"""axe-core finds no serious or critical violation on any customer page, in either language."""

import pytest
from axe_playwright_python.sync_playwright import Axe
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.services import request_password_reset
from tests.factories import CustomerFactory, open_failed_case

from .conftest import PHONE, last_code, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

AXE = Axe()


def serious_violations(page) -> list[str]:
    results = AXE.run(page)
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']} at "
        + ", ".join(str(node["target"]) for node in violation["nodes"][:3])
        for violation in results.response["violations"]
        if violation["impact"] in ("serious", "critical")
    ]


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_every_customer_page_passes_axe(browser, live_server, sms_file, language):
    customer = CustomerFactory(email="zhang.wei@example.com")
    failed = open_failed_case(customer)
    rejected = open_failed_case(customer, reason="core_rejected")
    context = browser.new_context(viewport=PHONE, extra_http_headers={"Accept-Language": language})
    page = context.new_page()
    base = live_server.url
    pages: dict[str, str] = {}

    def scan(name: str) -> None:
        pages[name] = "; ".join(serious_violations(page))

    for path in ("/", "/help/", "/accounts/login/", "/accounts/password-reset/"):
        page.goto(base + path)
        scan(path)
    page.goto(base + "/accounts/login/")
    page.locator("#id_username").fill("nobody")
    page.locator("#id_password").fill("wrong")
    page.locator("main button[type=submit]").click()
    scan("sign-in error")
    request_password_reset(phone_number=str(customer.phone_number))
    page.goto(base + "/accounts/password-reset/")
    page.locator("#id_phone_number").fill(str(customer.phone_number))
    page.locator("main button[type=submit]").click()
    scan("password reset confirm")

    sign_in(page, base, customer.username, button="登录" if language != "en" else "Sign in")
    for path in (
        "/activation/",
        f"/activation/{failed.pk}/",
        f"/activation/{rejected.pk}/",
        f"/activation/{failed.pk}/retry/",
    ):
        page.goto(base + path)
        scan(path)
    page.locator("button[value=send]").click()
    scan("code form")
    page.locator("#id_code").fill("000000")
    page.locator("button[value=verify]").click()
    scan("code error")
    page.wait_for_timeout(1100)  # past the throttle the wrong code started
    page.locator("#id_code").fill(last_code(sms_file, str(customer.phone_number)))
    page.locator("button[value=verify]").click()
    page.get_by_text("Activation in progress" if language == "en" else "正在激活").wait_for()
    scan("in progress")
    page.goto(base + "/accounts/profile/")
    scan("profile")
    page.locator("button[value=start_app]").click()
    scan("profile enrolling an app")
    assert TOTPDevice.objects.filter(user=customer, confirmed=False).exists()

    assert {name: problems for name, problems in pages.items() if problems} == {}
    assert len(pages) == 15
    context.close()
