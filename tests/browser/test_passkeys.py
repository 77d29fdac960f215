"""Passkeys in Chromium, answered by its virtual authenticator (a phone's fingerprint or face).

Browsers offer WebAuthn only on https or on http://localhost, so every test browses the live
server as ``localhost`` and names that origin in ``OTP_WEBAUTHN_ALLOWED_ORIGINS``.
"""

import base64
import re
import time
import uuid
from dataclasses import dataclass

import pyotp
import pytest
from django.utils import translation
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.models import WebAuthnCredential
from playwright.sync_api import CDPSession, Page, expect

from accounts.masking import mask_phone_number
from activation.models import CaseEvent, CaseState, CoreRequest
from audit.models import SystemEvent
from tests.factories import PASSWORD, CustomerFactory, open_failed_case
from verification.backup_codes import backup_codes_left, issue_initial_backup_codes
from verification.models import PasskeyChallenge
from verification.services import CheckResult

from .conftest import PHONE, last_code, sign_in
from .test_accessibility import AXE

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

DESKTOP = {"width": 1280, "height": 900}
# A platform authenticator that checks the user's fingerprint or face, and always says yes.
AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
    "automaticPresenceSimulation": True,
}


@dataclass
class VirtualAuthenticator:
    cdp: CDPSession
    authenticator_id: str

    def credentials(self) -> list[dict]:
        answer = self.cdp.send(
            "WebAuthn.getCredentials", {"authenticatorId": self.authenticator_id}
        )
        return answer["credentials"]


def add_authenticator(page: Page) -> VirtualAuthenticator:
    """Give ``page`` a platform authenticator, as a phone with a fingerprint reader has."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    return VirtualAuthenticator(cdp, added["authenticatorId"])


@pytest.fixture
def base_url(live_server, settings) -> str:
    """The live server's address, which browsers allow passkeys on, as the only origin."""
    assert live_server.url.startswith("http://localhost:")
    settings.OTP_WEBAUTHN_ALLOWED_ORIGINS = [live_server.url]
    return live_server.url


def text(language: str, message: str) -> str:
    """``message`` as the page shows it in ``language``."""
    with translation.override(language):
        return translation.gettext(message)


class AxeScans:
    """Scan pages as a test walks through them; report every serious problem at the end."""

    def __init__(self) -> None:
        self.problems: dict[str, str] = {}

    def __call__(self, page: Page, name: str, *, context: dict | None = None) -> None:
        results = AXE.run(page, context=context)
        self.problems[name] = "; ".join(
            f"{violation['id']} ({violation['impact']}): {violation['help']} at "
            + ", ".join(str(node["target"]) for node in violation["nodes"][:3])
            for violation in results.response["violations"]
            if violation["impact"] in ("serious", "critical")
        )

    def serious(self) -> dict[str, str]:
        return {name: found for name, found in self.problems.items() if found}


def customer_page(browser, language: str, *, javascript: bool = True) -> Page:
    context = browser.new_context(
        viewport=PHONE,
        java_script_enabled=javascript,
        extra_http_headers={"Accept-Language": language},
    )
    return context.new_page()


def prove_with_sms(page: Page, sms_file, customer, language: str, *, form) -> None:
    """Ask for a proof code by SMS and type it into ``form`` (the only proof without an app)."""
    page.get_by_role("button", name=text(language, "Text me a code to prove it is me")).click()
    sent = text(
        language,
        "We sent a code to %(destination)s. It works only to change your authenticator app or "
        "passkeys.",
    )
    destination = mask_phone_number(str(customer.phone_number))
    expect(page.get_by_text(sent % {"destination": destination})).to_be_visible()
    form.get_by_label(text(language, "Code that proves it is you")).fill(
        last_code(sms_file, str(customer.phone_number))
    )


def add_customer_passkey(
    page: Page, customer, sms_file, language: str, *, scan: "AxeScans"
) -> WebAuthnCredential:
    """On My account: prove it is the customer with an SMS code, then create "My phone"."""
    page.get_by_role("link", name=text(language, "My account")).click()
    section = page.locator("#passkeys")
    expect(section.get_by_role("heading", name=text(language, "Add a passkey"))).to_be_visible()
    expect(section.locator("[data-passkey-unsupported]")).to_be_hidden()
    scan(page, f"profile, passkeys ({language})")
    prove = section.locator("form", has=page.locator("button[value=passkey_prove]"))
    prove_with_sms(page, sms_file, customer, language, form=prove)
    prove.get_by_role("button", name=text(language, "Continue")).click()

    name_field = section.get_by_label(text(language, "Name it (for example, the phone it is on)"))
    expect(name_field).to_be_visible()
    scan(page, f"profile, creating a passkey ({language})")
    name_field.fill("My phone")
    section.get_by_role("button", name=text(language, "Create my passkey")).click()
    added = text(language, "Your passkey “%(name)s” is added. Next time, confirm with it.")
    expect(page.get_by_text(added % {"name": "My phone"})).to_be_visible()
    expect(section.locator("ul.passkeys li")).to_have_count(1)
    expect(section.locator("ul.passkeys")).to_contain_text("My phone")
    return WebAuthnCredential.objects.get(user=customer)


def test_a_customer_adds_a_passkey_and_rescues_an_activation_with_it_in_chinese(
    browser, base_url, core, sms_file
):
    language = "zh-hans"
    customer = CustomerFactory()
    case = open_failed_case(customer)
    page = customer_page(browser, language)
    authenticator = add_authenticator(page)
    scan = AxeScans()

    sign_in(page, base_url, customer.username, button=text(language, "Sign in"))
    expect(page.locator("html")).to_have_attribute("lang", language)
    passkey = add_customer_passkey(page, customer, sms_file, language, scan=scan)
    assert passkey.name == "My phone"
    assert passkey.confirmed
    assert len(authenticator.credentials()) == 1
    assert list(
        SystemEvent.objects.filter(kind__startswith="factor.passkey").values_list("kind", flat=True)
    ) == ["factor.passkey_added"]

    page.goto(f"{base_url}/activation/{case.pk}/retry/")
    scan(page, "retry, choosing a way")
    page.get_by_role("button", name=text(language, "Use my passkey (fingerprint or face)")).click()
    verify = page.get_by_role("button", name=text(language, "Verify with my passkey and activate"))
    expect(verify).to_be_visible()
    scan(page, "retry, verifying with the passkey")
    verify.click()

    expect(page.get_by_text(text(language, "Your credit line is active."))).to_be_visible(
        timeout=30_000
    )
    case.refresh_from_db()
    assert case.state == CaseState.ACTIVATED
    succeeded = CaseEvent.objects.filter(case=case, kind="verification.succeeded")
    assert [event.data["channel"] for event in succeeded] == ["passkey"]
    assert succeeded.get().data["passkey"] == passkey.pk
    assert not CaseEvent.objects.filter(case=case, kind="verification.failed").exists()
    assert CoreRequest.objects.filter(case=case).count() == 1
    assert not PasskeyChallenge.objects.filter(user=customer).exists()  # answered once, gone
    passkey.refresh_from_db()
    assert passkey.last_used_at is not None
    # Activated with a passkey already on the account: no offer to add one.
    expect(page.get_by_text(text(language, "Add a passkey in My account"))).to_have_count(0)
    assert scan.serious() == {}
    page.context.close()


def test_a_removed_passkey_is_no_longer_offered_and_its_answer_is_refused(
    browser, base_url, sms_file, settings
):
    settings.VERIFICATION_RESEND_COOLDOWN_SECONDS = (
        0  # the removal's proof, seconds after the first
    )
    language = "en"
    customer = CustomerFactory()
    case = open_failed_case(customer)
    page = customer_page(browser, language)
    authenticator = add_authenticator(page)
    scan = AxeScans()
    sign_in(page, base_url, customer.username)
    passkey = add_customer_passkey(page, customer, sms_file, language, scan=scan)

    # A genuine answer to a live request for this case, kept instead of sent: the page's
    # script calls form.submit(), which here only keeps what it would have posted.
    page.goto(f"{base_url}/activation/{case.pk}/retry/")
    page.get_by_role("button", name="Use my passkey (fingerprint or face)").click()
    page.evaluate(
        """() => {
            const form = document.querySelector("form[data-passkey]");
            form.submit = () => {
                form.dataset.kept = form.querySelector("[data-passkey-field]").value;
            };
        }"""
    )
    page.get_by_role("button", name="Verify with my passkey and activate").click()
    passkey_form = page.locator("form[data-passkey]")
    expect(passkey_form).to_have_attribute("data-kept", re.compile(r"^\{.+"))
    kept_answer = passkey_form.get_attribute("data-kept")
    assert PasskeyChallenge.objects.filter(user=customer, case_id=case.pk).exists()

    page.goto(base_url + "/accounts/profile/")
    remove = page.locator("form", has=page.locator("button[value=passkey_remove]"))
    remove.get_by_label("Passkey to remove").select_option(label="My phone")
    prove_with_sms(page, sms_file, customer, language, form=remove)
    remove.get_by_role("button", name="Remove passkey").click()
    expect(page.get_by_text("The passkey was removed.")).to_be_visible()
    expect(page.locator("#passkeys ul.passkeys")).to_have_count(0)
    assert not WebAuthnCredential.objects.filter(user=customer).exists()
    assert len(authenticator.credentials()) == 1  # the phone still holds it

    page.goto(f"{base_url}/activation/{case.pk}/retry/")
    expect(page.get_by_role("button", name="Send code")).to_be_visible()
    expect(page.get_by_role("button", name="Use my passkey (fingerprint or face)")).to_have_count(0)
    expect(page.locator("form[data-passkey]")).to_have_count(0)

    # The kept answer, posted as the page would have: refused, and counted on the timeline.
    token = page.locator("input[name=csrfmiddlewaretoken]").first.input_value()
    with page.expect_navigation():
        page.evaluate(
            """([fields]) => {
                const form = document.createElement("form");
                form.method = "post";
                for (const [name, value] of Object.entries(fields)) {
                    const input = document.createElement("input");
                    input.type = "hidden";
                    input.name = name;
                    input.value = value;
                    form.append(input);
                }
                document.body.append(form);
                HTMLFormElement.prototype.submit.call(form);
            }""",
            [
                {
                    "csrfmiddlewaretoken": token,
                    "action": "verify_passkey",
                    "submission_id": str(uuid.uuid4()),
                    "code": kept_answer,
                }
            ],
        )
    expect(
        page.get_by_text(
            "Your passkey's answer was not accepted. Try again, or choose another way."
        )
    ).to_be_visible()
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION
    failed = CaseEvent.objects.get(case=case, kind="verification.failed")
    assert failed.data == {
        "channel": "passkey",
        "result": CheckResult.INVALID,
        "why": "unknown_passkey",
    }
    assert not CaseEvent.objects.filter(case=case, kind="verification.succeeded").exists()
    assert not CoreRequest.objects.filter(case=case).exists()
    assert list(
        SystemEvent.objects.filter(kind__startswith="factor.passkey").values_list(
            "kind", "data__passkey"
        )
    ) == [("factor.passkey_added", passkey.pk), ("factor.passkey_removed", passkey.pk)]
    assert scan.serious() == {}
    page.context.close()


def test_without_javascript_passkeys_are_explained_and_the_codes_still_work(
    browser, base_url, sms_file
):
    language = "zh-hans"
    customer = CustomerFactory()
    case = open_failed_case(customer)
    # Made elsewhere (this browser cannot make one): only its being there matters here.
    WebAuthnCredential.objects.create(
        user=customer,
        name="My phone",
        credential_id=b"made-on-another-browser",
        credential_id_sha256=WebAuthnCredential.get_credential_id_sha256(
            b"made-on-another-browser"
        ),
        public_key=b"not-used-here",
        aaguid="00000000-0000-0000-0000-000000000000",
    )
    page = customer_page(browser, language, javascript=False)
    sign_in(page, base_url, customer.username, button=text(language, "Sign in"))
    expect(page.locator("html")).to_have_attribute("lang", language)
    unsupported = text(
        language,
        "Your passkey needs a newer browser with JavaScript turned on. You can still use a code "
        "by SMS, e-mail or your authenticator app.",
    )

    page.goto(base_url + "/accounts/profile/")
    section = page.locator("#passkeys")
    expect(section.get_by_text(unsupported)).to_be_visible()
    expect(section.get_by_role("button", name=text(language, "Continue"))).to_be_hidden()
    expect(section.locator("ul.passkeys")).to_contain_text("My phone")
    expect(
        page.get_by_role("button", name=text(language, "Set up authenticator app"))
    ).to_be_visible()

    page.goto(f"{base_url}/activation/{case.pk}/retry/")
    expect(page.get_by_text(unsupported)).to_be_visible()
    expect(
        page.get_by_role("button", name=text(language, "Use my passkey (fingerprint or face)"))
    ).to_be_hidden()
    page.get_by_role("button", name=text(language, "Send code")).click()
    page.get_by_label(text(language, "Verification code")).fill(
        last_code(sms_file, str(customer.phone_number))
    )
    page.get_by_role("button", name=text(language, "Verify and activate")).click()
    expect(page.get_by_text(text(language, "This page updates by itself."))).to_be_visible()
    case.refresh_from_db()
    assert case.state in (CaseState.SUBMITTING, CaseState.AWAITING_CONFIRMATION)
    assert list(
        CaseEvent.objects.filter(case=case, kind="verification.succeeded").values_list(
            "data__channel", flat=True
        )
    ) == ["sms"]
    page.context.close()


# --- Staff -------------------------------------------------------------------------------------


def app_code(user, *, steps_ahead: int = 0) -> str:
    """The code the member's authenticator app shows (``steps_ahead`` time steps later)."""
    device = TOTPDevice.objects.get(user=user)
    totp = pyotp.TOTP(base64.b32encode(device.bin_key).decode())
    return totp.at(time.time() + steps_ahead * totp.interval)


def staff_login_form(page: Page, base_url: str, user) -> None:
    page.goto(base_url + "/backoffice/login/")
    page.locator("input[name=username]").fill(user.username)
    page.locator("input[name=password]").fill(PASSWORD)


def sign_out_of_backoffice(page: Page) -> None:
    page.locator("#logout-form button").click()
    expect(page.locator("#logout-form")).to_have_count(0)


def test_a_staff_member_adds_a_passkey_and_signs_in_with_it_instead_of_a_code(
    browser, base_url, agent
):
    context = browser.new_context(viewport=DESKTOP, locale="en-US")
    page = context.new_page()
    authenticator = add_authenticator(page)
    scan = AxeScans()

    staff_login_form(page, base_url, agent)
    expect(page.get_by_role("button", name="Log in with a passkey")).to_be_visible()
    scan(page, "back-office login")
    page.locator("input[name=otp_token]").fill(app_code(agent))
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.get_by_role("heading", name="Work queue")).to_be_visible()

    page.goto(base_url + "/backoffice/passkeys/")
    expect(page.get_by_text("You have no passkey yet.")).to_be_visible()
    scan(page, "back-office passkeys")
    # The code of the next time step: the sign-in used this one, and an app code works once.
    page.get_by_label("Code from your authenticator app").fill(app_code(agent, steps_ahead=1))
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Name it (for example, the phone it is on)").fill("Work laptop")
    scan(page, "back-office passkeys, creating one")
    page.get_by_role("button", name="Create my passkey").click()
    expect(page.get_by_text("Your passkey is added.")).to_be_visible()
    expect(page.locator("#content-main table")).to_contain_text("Work laptop")
    passkey = WebAuthnCredential.objects.get(user=agent)
    assert passkey.name == "Work laptop"
    assert len(authenticator.credentials()) == 1

    sign_out_of_backoffice(page)
    staff_login_form(page, base_url, agent)
    page.get_by_role("button", name="Log in with a passkey").click()
    expect(page.get_by_role("heading", name="Work queue")).to_be_visible()
    page.goto(base_url + "/backoffice/passkeys/")  # a page only a verified session sees
    expect(page.locator("#content-main table")).to_contain_text("Work laptop")
    passkey.refresh_from_db()
    assert passkey.last_used_at is not None
    assert list(
        SystemEvent.objects.filter(kind__startswith="staff.passkey").values_list(
            "kind", "data__passkey"
        )
    ) == [("staff.passkey_sign_in", passkey.pk)]
    assert scan.serious() == {}
    context.close()


def test_a_backup_code_signs_a_staff_member_in_once(browser, base_url, agent):
    codes = issue_initial_backup_codes(user=agent)
    context = browser.new_context(viewport=DESKTOP, locale="en-US")
    page = context.new_page()

    staff_login_form(page, base_url, agent)
    page.locator("input[name=otp_token]").fill(codes[0])
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(page.get_by_role("heading", name="Work queue")).to_be_visible()
    assert backup_codes_left(agent) == len(codes) - 1

    sign_out_of_backoffice(page)
    staff_login_form(page, base_url, agent)
    page.locator("input[name=otp_token]").fill(codes[0])
    page.get_by_role("button", name="Log in", exact=True).click()
    expect(
        page.get_by_text("Invalid token. Please make sure you have entered it correctly.")
    ).to_be_visible()
    expect(page.get_by_role("heading", name="Work queue")).to_have_count(0)
    page.goto(base_url + "/backoffice/")
    expect(page.locator("input[name=otp_token]")).to_be_visible()  # still signed out
    assert backup_codes_left(agent) == len(codes) - 1
    assert list(
        SystemEvent.objects.filter(kind="staff.backup_code_used").values_list(
            "data__codes_left", flat=True
        )
    ) == [len(codes) - 1]
    context.close()
