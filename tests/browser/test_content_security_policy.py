"""With JavaScript on, no customer or back-office page breaks its Content-Security-Policy."""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from activation.models import BulkRecoveryJob, FailureReason
from tests.factories import CustomerFactory, open_failed_case, open_review_case

from .conftest import PHONE, last_code, sign_in
from .test_backoffice import DESKTOP, staff_sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Playwright injects this itself, so the policy does not apply to it: it records every violation
# the page reports, besides the console messages Chromium prints for each.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  window.cspViolations.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""


class PolicyWatch:
    """Collect CSP reports and response headers from every page one browser context loads."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.reports: list[str] = []
        self.pages_without_policy: list[str] = []
        page.on("console", self._console)
        page.on("response", self._response)

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.reports.append(f"{self.page.url}: {message.text}")

    def _response(self, response) -> None:
        if response.request.resource_type != "document":
            return
        policy = response.headers.get("content-security-policy", "")
        if "script-src 'self'" not in policy or "style-src 'self'" not in policy:
            self.pages_without_policy.append(response.url)

    def visit(self, url: str) -> None:
        self.page.goto(url)
        self.check()

    def check(self) -> None:
        self.page.wait_for_load_state("load")
        reported = self.page.evaluate("window.cspViolations || []")
        self.reports.extend(f"{self.page.url}: {violation}" for violation in reported)
        self.page.evaluate("window.cspViolations = []")


def watched_page(browser, **options) -> tuple[Page, PolicyWatch]:
    context = browser.new_context(**options)
    context.add_init_script(RECORD_VIOLATIONS)
    page = context.new_page()
    return page, PolicyWatch(page)


def test_the_watch_notices_an_inline_script(browser, live_server):
    """The check below is only worth something if a violation would be seen."""
    page, watch = watched_page(browser, viewport=PHONE, locale="en-US")
    watch.visit(live_server.url + "/help/")
    page.evaluate(
        "document.body.insertAdjacentHTML('beforeend', '<img src=x onerror=\"window.ran=1\">')"
    )
    page.wait_for_function("window.cspViolations.length > 0")  # the report comes asynchronously
    watch.check()
    assert page.evaluate("window.ran") is None
    assert any("script-src" in report for report in watch.reports), watch.reports


def test_customer_pages_with_javascript_keep_to_the_policy(
    browser, live_server, core, sms_file, settings
):
    settings.ACTIVATION_PROGRESS_REFRESH_SECONDS = 1
    customer = CustomerFactory()
    case = open_failed_case(customer)
    page, watch = watched_page(browser, viewport=PHONE, locale="en-US")
    base = live_server.url
    for path in ("/", "/help/", "/accounts/login/", "/accounts/password-reset/"):
        watch.visit(base + path)
    sign_in(page, base, customer.username)
    watch.check()
    for path in ("/activation/", f"/activation/{case.pk}/", f"/activation/{case.pk}/retry/"):
        watch.visit(base + path)
    page.get_by_role("button", name="Send code").click()
    watch.check()
    page.wait_for_timeout(1100)  # the resend countdown (progress.js) ticks
    page.get_by_label("Verification code").fill(last_code(sms_file, str(customer.phone_number)))
    page.get_by_role("button", name="Verify and activate").click()
    expect(page.get_by_text("Activation in progress")).to_be_visible()
    # progress.js polls and swaps the status panel in place until the core confirms.
    expect(page.get_by_text("Your credit line is active.")).to_be_visible(timeout=30_000)
    watch.check()
    watch.visit(base + "/accounts/profile/")

    assert watch.pages_without_policy == []
    assert watch.reports == []


def test_back_office_pages_with_javascript_keep_to_the_policy(browser, live_server, supervisor):
    stuck = open_review_case(reason=FailureReason.CORE_UNAVAILABLE)
    page, watch = watched_page(browser, viewport=DESKTOP, locale="en-US")
    base = live_server.url
    watch.visit(base + "/backoffice/login/")
    staff_sign_in(page, base, supervisor)
    watch.check()
    queue = "/backoffice/activation/activationcase/"
    for path in (
        queue + "?state__exact=needs_review",
        f"{queue}{stuck.pk}/change/",
        "/backoffice/activation/creditline/",
        "/backoffice/activation/overriderequest/",
        "/backoffice/exports/",
        "/backoffice/core-submissions/",
        "/backoffice/bulk-recovery/",
    ):
        watch.visit(base + path)
    # Since yesterday until now, typed to the minute (the next one): within the last 90 days.
    now = timezone.localtime()
    page.get_by_label("Failed since").fill(f"{now - timedelta(days=1):%Y-%m-%d %H:%M}")
    page.get_by_label("Failed before").fill(f"{now + timedelta(minutes=1):%Y-%m-%d %H:%M}")
    page.get_by_label("Reason").fill("after the outage")
    page.get_by_role("button", name="Resubmit these cases").click()
    expect(page.get_by_text("Done")).to_be_visible()  # tasks are eager in tests
    assert BulkRecoveryJob.objects.get().resubmitted == 1
    watch.check()

    assert watch.pages_without_policy == []
    assert watch.reports == []


def test_admin_pages_a_superuser_uses_keep_to_the_policy(browser, live_server):
    from tests.factories import StaffFactory

    superuser = StaffFactory(is_superuser=True)
    customer = CustomerFactory()
    page, watch = watched_page(browser, viewport=DESKTOP, locale="en-US")
    base = live_server.url
    staff_sign_in(page, base, superuser)
    watch.check()
    for path in (
        "/backoffice/accounts/user/",
        f"/backoffice/accounts/user/{customer.pk}/change/",  # the groups/permissions widgets
        "/backoffice/accounts/user/add/",
        "/backoffice/otp_totp/totpdevice/",
        "/backoffice/activation/activationcase/?q=1",
    ):
        watch.visit(base + path)

    assert watch.pages_without_policy == []
    assert watch.reports == []
