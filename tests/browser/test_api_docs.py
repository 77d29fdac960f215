"""The API's readers (Swagger UI, ReDoc) render the operations from our own files, under our CSP."""

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from .test_content_security_policy import watched_page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DESKTOP = {"width": 1280, "height": 900}
# ReDoc's bundle always draws Redocly's logo from its CDN; our img-src blocks it (so it never
# leaves the host, which the route check below also proves) and the browser reports that.
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def _open(browser, live_server, path: str):
    page, watch = watched_page(browser, viewport=DESKTOP, locale="en-US")
    host = urlsplit(live_server.url).netloc
    elsewhere: list[str] = []

    def _route(route):
        if urlsplit(route.request.url).netloc not in {host, ""}:
            elsewhere.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    # Every request leaving the host is recorded and stopped (blob: and data: never reach here).
    page.context.route("**/*", _route)
    watch.visit(live_server.url + path)
    return page, watch, elsewhere


def test_swagger_ui_shows_the_operations_with_no_violation_and_nothing_from_elsewhere(
    browser, live_server
):
    page, watch, elsewhere = _open(browser, live_server, "/api/v1/docs/")
    expect(page.locator(".opblock").first).to_be_visible(timeout=15000)
    expect(page.get_by_text("/api/v1/staff/cases/", exact=False).first).to_be_visible()
    assert page.locator(".opblock").count() >= 5
    page.locator(".opblock-summary").first.click()  # expands without a violation too
    expect(page.locator(".opblock-body").first).to_be_visible()
    watch.check()
    assert watch.reports == [], "\n".join(watch.reports)
    assert watch.pages_without_policy == []
    assert elsewhere == []


def test_redoc_shows_the_operations_with_no_violation_and_nothing_from_elsewhere(
    browser, live_server
):
    page, watch, elsewhere = _open(browser, live_server, "/api/v1/redoc/")
    expect(page.locator("[data-section-id^='operation/']").first).to_be_attached(timeout=15000)
    assert page.locator("[data-section-id^='operation/']").count() >= 5
    expect(page.get_by_text("coreEvent", exact=False).first).to_be_attached()
    watch.check()
    reports = [report for report in watch.reports if REDOC_LOGO not in report]
    assert reports == [], "\n".join(reports)
    assert watch.pages_without_policy == []
    assert elsewhere == []
