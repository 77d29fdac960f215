"""Staff rescue a case in the back office: an agent asks, a supervisor approves."""

import base64

import pyotp
import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import expect

from activation.models import ActorType, CaseState, FailureReason
from activation.transitions import transition
from tests.factories import PASSWORD, CustomerFactory, open_failed_case

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DESKTOP = {"width": 1280, "height": 900}


def staff_sign_in(page, base_url: str, user) -> None:
    device = TOTPDevice.objects.get(user=user)
    code = pyotp.TOTP(base64.b32encode(device.bin_key).decode()).now()
    page.goto(base_url + "/backoffice/")
    page.locator("input[name=username]").fill(user.username)
    page.locator("input[name=password]").fill(PASSWORD)
    page.locator("input[name=otp_token]").fill(code)
    page.locator("input[type=submit]").first.click()


def stuck_case(reason):
    case = open_failed_case(CustomerFactory(), reason=reason)
    transition(case, to=CaseState.NEEDS_REVIEW, actor_type=ActorType.SYSTEM, reason=reason)
    return case


def test_an_agent_requests_mark_activated_and_a_supervisor_approves(
    browser, live_server, agent, supervisor
):
    case = stuck_case(FailureReason.SYNC_TIMEOUT)
    other = stuck_case(FailureReason.CORE_REJECTED)
    context = browser.new_context(viewport=DESKTOP, locale="en-US")
    page = context.new_page()

    staff_sign_in(page, live_server.url, agent)
    expect(page.get_by_role("heading", name="Work queue")).to_be_visible()
    page.locator("#changelist-filter").get_by_role(
        "link", name="The credit system did not confirm in time"
    ).click()
    expect(page.get_by_role("link", name=case.credit_line.reference)).to_be_visible()
    expect(page.get_by_role("link", name=other.credit_line.reference)).to_have_count(0)
    page.get_by_role("link", name=case.credit_line.reference).click()

    page.get_by_label("Override").select_option("mark_activated")
    page.get_by_label("Core reference").fill("act_20261124_77")
    page.locator("#override-reason").fill("The core team confirmed it by phone")
    page.get_by_role("button", name="Request override").click()
    expect(page.get_by_text("Override requested; a supervisor must approve it.")).to_be_visible()
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    context.close()

    context = browser.new_context(viewport=DESKTOP, locale="en-US")
    page = context.new_page()
    staff_sign_in(page, live_server.url, supervisor)
    page.goto(f"{live_server.url}/backoffice/activation/activationcase/{case.pk}/change/")
    page.locator("input[name=reason]").first.fill("Checked the core's reference")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_text("Override approved.")).to_be_visible()

    case.refresh_from_db()
    assert case.state == CaseState.ACTIVATED
    timeline = page.locator("#events-group")
    expect(timeline.get_by_text("override.requested", exact=True)).to_be_visible()
    expect(timeline.get_by_text("override.approved", exact=True)).to_be_visible()
    expect(timeline.get_by_text(agent.username).first).to_be_visible()
    expect(timeline.get_by_text(supervisor.username).first).to_be_visible()
    context.close()
