"""Chromium through Playwright against the live server, the simulator and the SMS file."""

import json
import re
from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import Page, sync_playwright

from tests.factories import PASSWORD
from tests.fixtures import CHROMIUM

PHONE = {"width": 375, "height": 667}
SMALL_PHONE = {"width": 320, "height": 568}
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


@pytest.fixture
def core(core_simulator, live_server, settings):
    """The simulator answering 202 and confirming by callback to the live server."""
    settings.ACTIVATION_PROGRESS_REFRESH_SECONDS = 1
    core_simulator.configure(
        pending_rate=1.0,
        callback_delay_seconds=2.0,
        callback_url=f"{live_server.url}/api/v1/core/events/",
    )
    return core_simulator


def sms_codes(path: Path, to: str) -> list[str]:
    if not path.exists():
        return []
    messages = [json.loads(line) for line in path.read_text().splitlines()]
    return [re.search(r"\d{6}", m["body"]).group(0) for m in messages if m["to"] == to]


def last_code(path: Path, to: str) -> str:
    codes = sms_codes(path, to)
    assert codes, f"no SMS to {to}"
    return codes[-1]


def sign_in(page: Page, base_url: str, username: str, button: str = "Sign in") -> None:
    page.goto(base_url + "/accounts/login/")
    page.locator("#id_username").fill(username)
    page.locator("#id_password").fill(PASSWORD)
    page.get_by_role("button", name=button).click()


def no_horizontal_scroll(page: Page) -> bool:
    return page.evaluate(
        "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )
