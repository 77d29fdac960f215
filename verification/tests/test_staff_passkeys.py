"""Staff passkeys: added on the back office's own page with the app's code, used with the
password to sign in, never with someone else's passkey, never as a typed code, and gone after an
approved authenticator reset."""

import json

import pytest
from axes.models import AccessAttempt
from django.test import Client
from django.utils import timezone
from django_otp_webauthn.models import WebAuthnCredential

from activation.tests.test_backoffice import current_code, sign_in
from audit.models import SystemEvent
from portal.tests.test_backoffice import is_verified
from tests.factories import PASSWORD, StaffFactory
from verification import backup_codes, factors
from verification.models import PasskeyChallenge, Purpose

from .soft_authenticator import SoftAuthenticator
from .test_passkeys import add_passkey as add_customer_passkey

pytestmark = pytest.mark.django_db

PAGE = "/backoffice/passkeys/"
CREATE_OPTIONS = "/backoffice/passkeys/options/"
LOGIN = "/backoffice/login/?next=/backoffice/"
LOGIN_OPTIONS = "/backoffice/login/passkey-options/"
APP_STEP = 31  # an app's code is used once: the next one comes with the next 30-second step


def events(kind: str) -> list[SystemEvent]:
    return list(SystemEvent.objects.filter(kind=kind).order_by("seq"))


def verified_client(user) -> Client:
    client = Client()
    sign_in(client, user, current_code(user))
    assert is_verified(client)
    return client


def add_passkey(client: Client, staff, phone: SoftAuthenticator, clock, name="Work laptop"):
    """Prove with the app's next code, fetch the options, answer them; return the passkey."""
    clock.shift(APP_STEP)
    proved = client.post(PAGE, {"action": "prove", "prove-current_code": current_code(staff)})
    assert proved.status_code == 302
    options = client.post(CREATE_OPTIONS)
    assert options.status_code == 200, options.content
    answer = json.dumps(phone.create(options.json()["options"]))
    assert (
        client.post(PAGE, {"action": "add", "name": name, "credential": answer}).status_code == 302
    )
    return WebAuthnCredential.objects.filter(user=staff).latest("pk")


def sign_in_options(client: Client, staff, password: str = PASSWORD):
    return client.post(LOGIN_OPTIONS, {"username": staff.username, "password": password})


def passkey_sign_in(client: Client, staff, answer, **extra):
    body = answer if isinstance(answer, str) else json.dumps(answer)
    fields = {"username": staff.username, "password": PASSWORD, "otp_token": "", "passkey": body}
    return client.post(LOGIN, {**fields, **extra})


def staff_request(staff) -> PasskeyChallenge:
    return PasskeyChallenge.objects.get(user=staff, purpose=Purpose.STAFF_SIGN_IN)


# --- Adding and removing on /backoffice/passkeys/ -------------------------------------------


def test_a_staff_member_adds_a_passkey_with_a_code_from_the_app(agent, phone, clock):
    client = verified_client(agent)
    assert "You have no passkey yet." in client.get(PAGE).text

    passkey = add_passkey(client, agent, phone, clock)

    assert (passkey.name, passkey.confirmed) == ("Work laptop", True)
    [added] = events("factor.passkey_added")
    assert added.data == {"user_id": agent.pk, "passkey": passkey.pk, "name": "Work laptop"}
    page = client.get(PAGE)
    assert "Work laptop" in page.text
    assert "not used yet" in page.text
    # Used up: another passkey needs another code.
    assert client.post(CREATE_OPTIONS).status_code == 409


def test_without_the_apps_code_no_passkey_is_added(agent, phone, clock):
    client = verified_client(agent)
    refused = client.post(CREATE_OPTIONS)
    assert refused.status_code == 409
    assert refused.json()["code"] == "no_passkey_request"

    clock.shift(APP_STEP)
    wrong = client.post(PAGE, {"action": "prove", "prove-current_code": "000000"})
    assert wrong.status_code == 400
    assert "The code from your authenticator app is not right." in wrong.text
    assert client.post(CREATE_OPTIONS).status_code == 409
    # A made-up answer without a request adds nothing, and says so.
    made_up = phone.create({"user": {"id": "AAAA"}, "challenge": "AAAA"})
    response = client.post(PAGE, {"action": "add", "credential": json.dumps(made_up)}, follow=True)
    assert "The passkey was not added" in response.text
    assert not WebAuthnCredential.objects.exists()
    assert not events("factor.passkey_added")


def test_removing_a_passkey_needs_a_code_from_the_app(agent, phone, clock):
    client = verified_client(agent)
    passkey = add_passkey(client, agent, phone, clock)
    clock.shift(APP_STEP)
    wrong = client.post(
        PAGE, {"action": "remove", "remove-passkey": passkey.pk, "remove-current_code": "000000"}
    )
    assert wrong.status_code == 400
    assert WebAuthnCredential.objects.filter(pk=passkey.pk).exists()

    clock.shift(2)  # past the app's throttle after a wrong code
    right = client.post(
        PAGE,
        {
            "action": "remove",
            "remove-passkey": passkey.pk,
            "remove-current_code": current_code(agent),
        },
    )
    assert right.status_code == 302
    assert not WebAuthnCredential.objects.filter(pk=passkey.pk).exists()
    [removed] = events("factor.passkey_removed")
    assert removed.data == {"user_id": agent.pk, "passkey": passkey.pk, "name": "Work laptop"}


def test_a_session_signed_in_with_a_backup_code_changes_no_passkey(agent, phone, clock):
    keeper = verified_client(agent)
    passkey = add_passkey(keeper, agent, phone, clock)
    codes = backup_codes.issue_initial_backup_codes(user=agent)
    client = Client()
    sign_in(client, agent, codes[0])
    assert is_verified(client)

    assert client.get(PAGE).status_code == 200  # seeing them is fine
    clock.shift(APP_STEP)
    code = current_code(agent)
    assert client.post(PAGE, {"action": "prove", "prove-current_code": code}).status_code == 403
    assert client.post(CREATE_OPTIONS).status_code == 403
    removal = {"action": "remove", "remove-passkey": passkey.pk, "remove-current_code": code}
    assert client.post(PAGE, removal).status_code == 403
    assert WebAuthnCredential.objects.filter(pk=passkey.pk).exists()
    assert not PasskeyChallenge.objects.filter(purpose=Purpose.FACTOR_CHANGE).exists()


def test_the_passkeys_page_needs_a_verified_back_office_session(client, agent):
    client.force_login(agent)  # a password, no second factor
    assert client.get(PAGE).status_code == 302
    assert client.post(CREATE_OPTIONS).status_code == 302
    assert not PasskeyChallenge.objects.exists()


# --- Signing in with a passkey -------------------------------------------------------------


def test_a_staff_member_signs_in_with_password_and_passkey(agent, phone, clock):
    passkey = add_passkey(verified_client(agent), agent, phone, clock)
    client = Client()
    options = sign_in_options(client, agent)
    assert options.status_code == 200
    assert "no-store" in options["Cache-Control"]
    request = options.json()["options"]
    assert request["userVerification"] == "required"
    assert [item["id"] for item in request["allowCredentials"]] == [phone.credentials[0].id]

    response = passkey_sign_in(client, agent, phone.get(request))
    assert response.status_code == 302
    assert is_verified(client)
    passkey.refresh_from_db()
    assert (passkey.sign_count, passkey.last_used_at) == (1, timezone.now())
    [signed_in] = events("staff.passkey_sign_in")
    assert signed_in.data == {"user_id": agent.pk, "passkey": passkey.pk}
    assert not PasskeyChallenge.objects.filter(user=agent).exists()
    assert "Work laptop" in client.get(PAGE).text


def test_the_sign_in_options_need_the_right_password_and_count_toward_the_lock_out(
    agent, phone, clock, settings
):
    add_passkey(verified_client(agent), agent, phone, clock)
    client = Client()
    refused = sign_in_options(client, agent, password="not the password")
    assert refused.status_code == 400
    assert refused.json() == {
        "code": "invalid_login",
        "message": "Enter the username and password of a staff account, then try again.",
        "details": {},
    }
    assert not PasskeyChallenge.objects.filter(user=agent, purpose=Purpose.STAFF_SIGN_IN).exists()
    assert AccessAttempt.objects.get(username=agent.username).failures_since_start == 1

    for _guess in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in_options(client, agent, password="still not it")
    # Locked out: neither the options nor the form take even the right password now.
    assert sign_in_options(client, agent).status_code == 429
    clock.shift(APP_STEP)
    assert sign_in(client, agent, current_code(agent), follow=False).status_code == 429
    assert not is_verified(client)


def test_the_sign_in_options_are_only_for_staff(client, customer, phone):
    client.force_login(customer)
    add_customer_passkey(client, customer, phone)
    client.logout()
    response = sign_in_options(Client(), customer)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_login"
    assert not PasskeyChallenge.objects.filter(purpose=Purpose.STAFF_SIGN_IN).exists()


def test_a_staff_member_without_a_passkey_is_told_so(agent):
    response = sign_in_options(Client(), agent)
    assert response.status_code == 409
    assert response.json()["code"] == "no_passkey_request"


def assert_refused(client: Client, response, staff, why: str) -> None:
    assert response.status_code == 200  # the sign-in form again, with its error
    assert "Your passkey was not accepted." in response.text
    assert not is_verified(client)
    last = SystemEvent.objects.filter(kind__startswith="staff.passkey_sign_in").latest("seq")
    assert last.kind == "staff.passkey_sign_in_refused"
    assert (last.data["user_id"], last.data["why"]) == (staff.pk, why)


def test_a_customers_passkey_does_not_sign_staff_in(customer, agent, phone, clock):
    customer_browser = Client()
    customer_browser.force_login(customer)
    theirs = add_customer_passkey(customer_browser, customer, phone)
    add_passkey(verified_client(agent), agent, phone, clock)
    [customer_key] = [c for c in phone.credentials if c.credential_id == theirs.credential_id]

    client = Client()
    request = sign_in_options(client, agent).json()["options"]
    response = passkey_sign_in(client, agent, phone.get(request, credential=customer_key))
    assert_refused(client, response, agent, "other_account")
    assert staff_request(agent).failures == 1


def test_another_staff_members_passkey_does_not_sign_in(agent, supervisor, phone, clock):
    add_passkey(verified_client(agent), agent, phone, clock)
    theirs = add_passkey(verified_client(supervisor), supervisor, phone, clock, name="Sam's key")
    [their_key] = [c for c in phone.credentials if c.credential_id == theirs.credential_id]

    client = Client()
    request = sign_in_options(client, agent).json()["options"]
    response = passkey_sign_in(client, agent, phone.get(request, credential=their_key))
    assert_refused(client, response, agent, "other_account")
    # Nor does the answer the supervisor's key gave sign the supervisor in.
    response = passkey_sign_in(client, supervisor, phone.get(request, credential=their_key))
    assert response.status_code == 200
    assert not is_verified(client)


def test_an_answer_from_another_browser_does_not_sign_in(agent, phone, clock):
    add_passkey(verified_client(agent), agent, phone, clock)
    asked = Client()
    answer = phone.get(sign_in_options(asked, agent).json()["options"])
    intruder = Client()
    response = passkey_sign_in(intruder, agent, answer)
    assert_refused(intruder, response, agent, "no_request")
    # The request is still the first browser's.
    assert passkey_sign_in(asked, agent, answer).status_code == 302
    assert is_verified(asked)


def test_a_used_sign_in_answer_is_refused_afterwards(agent, phone, clock):
    add_passkey(verified_client(agent), agent, phone, clock)
    client = Client()
    answer = phone.get(sign_in_options(client, agent).json()["options"])
    assert passkey_sign_in(client, agent, answer).status_code == 302
    client.post("/backoffice/logout/")
    assert not is_verified(client)

    clock.shift(5)
    sign_in_options(client, agent)  # a new request: the old answer does not fit it
    response = passkey_sign_in(client, agent, answer)
    assert_refused(client, response, agent, "challenge")
    assert staff_request(agent).failures == 1


@pytest.mark.parametrize(
    ("tweak", "why"),
    [
        ({"origin": "https://evil.example"}, "origin"),
        ({"user_verified": False}, "user_verification"),
    ],
)
def test_a_tampered_sign_in_answer_is_refused_and_counted(agent, phone, clock, tweak, why):
    add_passkey(verified_client(agent), agent, phone, clock)
    client = Client()
    answer = phone.get(sign_in_options(client, agent).json()["options"], **tweak)
    assert_refused(client, passkey_sign_in(client, agent, answer), agent, why)
    assert staff_request(agent).failures == 1


def test_a_malformed_sign_in_answer_is_refused_never_a_500(agent, phone, clock):
    add_passkey(verified_client(agent), agent, phone, clock)
    client = Client()
    sign_in_options(client, agent)
    for attempt, body in enumerate(["{not json", "[]", json.dumps({"id": "x"})], start=1):
        response = passkey_sign_in(client, agent, body)
        assert_refused(client, response, agent, "malformed")
        assert staff_request(agent).failures == attempt
        clock.shift(10)
    oversized = passkey_sign_in(client, agent, "x" * 20_000)
    assert oversized.status_code == 200
    assert not is_verified(client)


def test_a_passkey_is_not_a_code_for_the_code_field(agent, phone, clock):
    passkey = add_passkey(verified_client(agent), agent, phone, clock)
    client = Client()
    answer = json.dumps(phone.get(sign_in_options(client, agent).json()["options"]))
    for fields in (
        {"otp_device": passkey.persistent_id, "otp_token": answer},
        {"otp_device": passkey.persistent_id, "otp_token": "123456"},
        {"otp_token": answer},
    ):
        response = client.post(LOGIN, {"username": agent.username, "password": PASSWORD, **fields})
        assert response.status_code == 200
        assert not is_verified(client)
        clock.shift(10)
    assert not events("staff.passkey_sign_in")
    # The request was never touched by the code field: the answer still works in its own field.
    assert staff_request(agent).failures == 0
    assert passkey_sign_in(client, agent, answer).status_code == 302


def test_an_approved_authenticator_reset_removes_the_members_passkeys(
    agent, supervisor, other_supervisor, phone, clock
):
    add_passkey(verified_client(agent), agent, phone, clock)
    client = Client()
    old_answer = phone.get(sign_in_options(client, agent).json()["options"])

    reset = factors.request_authenticator_reset(
        staff=supervisor, staff_member_id=agent.pk, reason="phone and laptop stolen"
    )
    factors.approve_authenticator_reset(reset_id=reset.pk, staff=other_supervisor)

    assert not WebAuthnCredential.objects.filter(user=agent).exists()
    assert_refused(client, passkey_sign_in(client, agent, old_answer), agent, "unknown_passkey")
    refused = sign_in_options(Client(), agent)
    assert refused.status_code == 409
    assert refused.json()["code"] == "no_passkey_request"


def test_a_customer_cannot_use_staff_passkey_pages(customer, client):
    client.force_login(customer)
    assert client.post(CREATE_OPTIONS).status_code in (302, 403)
    assert not PasskeyChallenge.objects.exists()


def test_the_passkey_admin_lists_passkeys_read_only(supervisor, agent, phone, clock):
    add_passkey(verified_client(agent), agent, phone, clock)
    clock.shift(APP_STEP)
    client = verified_client(StaffFactory(role="supervisor", is_superuser=True))
    listing = client.get("/backoffice/django_otp_webauthn/webauthncredential/")
    assert listing.status_code == 200
    assert "Work laptop" in listing.text
    assert "webauthncredential/add/" not in listing.text
