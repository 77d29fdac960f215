"""The back-office dashboard in a real browser: readable on a phone without JavaScript, in both
languages, with no serious accessibility problem."""

import pytest
from playwright.sync_api import expect

from activation.models import ActorType, CaseState, FailureReason
from activation.transitions import transition
from tests.factories import open_failed_case, open_review_case

from .conftest import PHONE
from .test_accessibility import serious_violations
from .test_backoffice import staff_sign_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def activated_case():
    case = open_failed_case()
    transition(case, to=CaseState.PENDING_VERIFICATION, actor_type=ActorType.CUSTOMER)
    transition(case, to=CaseState.SUBMITTING, actor_type=ActorType.CUSTOMER)
    transition(case, to=CaseState.ACTIVATED, actor_type=ActorType.SYSTEM)
    return case


@pytest.mark.parametrize(
    ("language", "heading", "numbers"),
    [("en", "Outcomes per hour", "Show the numbers"), ("zh-hans", "每小时结果", "显示数据")],
)
def test_staff_read_the_dashboard_on_a_phone_without_javascript(
    browser, live_server, supervisor, language, heading, numbers, tmp_path
):
    for _ in range(3):
        activated_case()
    open_review_case(reason=FailureReason.SYNC_TIMEOUT)
    context = browser.new_context(
        viewport=PHONE,
        java_script_enabled=False,
        extra_http_headers={"Accept-Language": language},
    )
    page = context.new_page()
    staff_sign_in(page, live_server.url, supervisor)
    page.goto(live_server.url + "/backoffice/dashboard/")

    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    chart = page.locator("svg.chart").first
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    assert box is not None and box["width"] <= PHONE["width"]  # scaled to the screen
    # Activated, failed (every case opens failed) and sent to staff, all this hour.
    assert page.locator("svg.chart").first.locator("rect").count() == 3
    # The table behind the chart opens without script (<details>).
    page.get_by_text(numbers).first.click()
    expect(page.locator("table.dashboard-table").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1
    page.screenshot(path=str(tmp_path / f"dashboard-{language}.png"), full_page=True)
    signed_in = context.storage_state()
    context.close()

    # axe-core is a script: it runs in a second context, with JavaScript on, in the same session.
    context = browser.new_context(
        viewport=PHONE,
        extra_http_headers={"Accept-Language": language},
        storage_state=signed_in,
    )
    page = context.new_page()
    page.goto(live_server.url + "/backoffice/dashboard/")
    page.get_by_text(numbers).first.click()
    assert serious_violations(page) == []
    context.close()
