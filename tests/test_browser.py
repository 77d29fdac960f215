"""A customer rescues a failed activation in a real browser: Chromium, JavaScript off, a phone."""

import json
import re
from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import expect, sync_playwright

from .factories import PASSWORD, CustomerFactory, open_failed_case
from .fixtures import CHROMIUM

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PHONE = {"width": 375, "height": 667}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser(monkeypatch):
    # Playwright's sync API keeps an event loop around; the live server's ORM calls are fine.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
        # Playwright runs the test in a greenlet with its own context, so its ORM connection is
        # not the one Django closes at teardown: close it here.
        connections.close_all()


@pytest.fixture
def sms_file(settings, tmp_path) -> Path:
    settings.SMS_BACKEND = "verification.sms.FileBackend"
    settings.SMS_FILE_PATH = str(tmp_path / "sms.jsonl")
    return Path(settings.SMS_FILE_PATH)


def code_from_sms_file(path: Path, to: str) -> str:
    messages = [json.loads(line) for line in path.read_text().splitlines()]
    body = [m["body"] for m in messages if m["to"] == to][-1]
    return re.search(r"\b(\d{6})\b", body).group(1)


def test_a_customer_retries_on_a_phone_without_javascript(
    browser, live_server, core_simulator, sms_file, settings
):
    settings.ACTIVATION_PROGRESS_REFRESH_SECONDS = 1
    core_simulator.configure(
        pending_rate=1.0,
        callback_delay_seconds=1.5,
        callback_url=f"{live_server.url}/api/v1/core/events/",
    )
    customer = CustomerFactory()
    case = open_failed_case(customer)
    context = browser.new_context(java_script_enabled=False, viewport=PHONE, locale="en-US")
    page = context.new_page()

    page.goto(live_server.url + "/")
    page.get_by_role("link", name="Sign in").click()
    page.get_by_label("Username").fill(customer.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_text("Activation failed.")).to_be_visible()
    page.get_by_role("link", name="Retry activation").click()
    expect(page.get_by_role("heading", name="Your code expired")).to_be_visible()
    page.get_by_role("button", name="Send code").click()

    code = code_from_sms_file(sms_file, str(customer.phone_number))
    page.get_by_label("Verification code").fill(code)
    page.get_by_role("button", name="Verify and activate").click()

    expect(page.get_by_text("Activation in progress")).to_be_visible()
    assert page.locator('meta[http-equiv="refresh"]').count() == 1
    # No script runs: only the page's own refresh can bring the news.
    expect(page.get_by_text("Your credit line is active.")).to_be_visible(timeout=30_000)

    case.refresh_from_db()
    assert case.state == "activated"
    assert core_simulator.stats()["activations"] == {case.credit_line.reference: 1}
    context.close()
