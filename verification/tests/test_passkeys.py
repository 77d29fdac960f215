"""Customers' passkeys, through the real pages: added and removed on My account with proof,
used to verify an activation, and refused (counted, with nothing changed) whenever the answer is
not exactly the one this request, this session and this case asked for.

The browser's side is ``SoftAuthenticator``: real keys, real signatures, the JSON a browser
posts.
"""

import json
import uuid
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone
from django_otp_webauthn.models import WebAuthnCredential

from activation.models import CaseEvent, CaseState, CoreRequest
from audit.models import SystemEvent
from risk.models import Rule, RuleSetVersion
from risk.tests.conftest import app_code, give_app
from tests.factories import CustomerFactory, open_failed_case
from tests.fixtures import last_sms_code
from verification.models import Channel, PasskeyChallenge, Purpose
from verification.sms import LocmemBackend

from .soft_authenticator import SoftAuthenticator

pytestmark = pytest.mark.django_db

PROFILE = "/accounts/profile/"
PROFILE_OPTIONS = "/accounts/profile/passkey-options/"
COOLDOWN = 61  # past the resend cooldown of an SMS code


@pytest.fixture
def browser(client, customer) -> Client:
    client.force_login(customer)
    return client


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def events(kind: str) -> list[SystemEvent]:
    return list(SystemEvent.objects.filter(kind=kind).order_by("seq"))


# --- My account: add, list, remove ----------------------------------------------------------


def sms_proof(browser: Client, customer) -> str:
    """Ask the profile page for a factor-change code by SMS; return it."""
    browser.post(PROFILE, {"action": "send_code"})
    return last_sms_code(str(customer.phone_number))


def prove(browser: Client, channel: str, code: str):
    return browser.post(
        PROFILE,
        {"action": "passkey_prove", "passkey-proof_channel": channel, "passkey-proof_code": code},
    )


def creation_options(browser: Client) -> dict:
    response = browser.post(PROFILE_OPTIONS)
    assert response.status_code == 200, response.content
    return response.json()["options"]


def post_new_passkey(browser: Client, credential, name: str = "My phone"):
    body = credential if isinstance(credential, str) else json.dumps(credential)
    return browser.post(PROFILE, {"action": "passkey_add", "name": name, "credential": body})


def add_passkey(browser: Client, customer, phone: SoftAuthenticator, name: str = "My phone"):
    """The whole of adding a passkey on My account, proved by SMS; return the new passkey."""
    assert prove(browser, "sms", sms_proof(browser, customer)).status_code == 302
    response = post_new_passkey(browser, phone.create(creation_options(browser)), name)
    assert response.status_code == 302
    return WebAuthnCredential.objects.filter(user=customer).latest("pk")


def remove(browser: Client, passkey, channel: str, code: str):
    return browser.post(
        PROFILE,
        {
            "action": "passkey_remove",
            "remove_passkey-passkey": passkey.pk,
            "remove_passkey-proof_channel": channel,
            "remove_passkey-proof_code": code,
        },
    )


def test_a_customer_adds_a_passkey_after_proving_it_is_them_by_sms(browser, customer, phone):
    passkey = add_passkey(browser, customer, phone, name="  Li's   Pixel  ")

    assert passkey.name == "Li's Pixel"
    assert passkey.confirmed
    assert passkey.credential_id == phone.credentials[0].credential_id
    [added] = events("factor.passkey_added")
    assert added.data == {"user_id": customer.pk, "passkey": passkey.pk, "name": "Li's Pixel"}
    assert added.actor_id == customer.pk
    assert not events("factor.passkey_refused")
    # The request was used up: the options are not handed out again without new proof.
    assert not PasskeyChallenge.objects.filter(user=customer).exists()
    assert browser.post(PROFILE_OPTIONS).status_code == 409

    page = browser.get(PROFILE)
    assert "Li&#x27;s Pixel" in page.text
    assert "not used yet" in page.text


def test_a_customer_with_an_app_proves_it_with_the_apps_code(browser, customer, phone):
    give_app(customer)
    assert prove(browser, "totp", app_code(customer)).status_code == 302
    post_new_passkey(browser, phone.create(creation_options(browser)))
    assert WebAuthnCredential.objects.filter(user=customer, confirmed=True).count() == 1


def test_without_proof_the_options_are_refused_with_the_error_envelope(browser, customer, phone):
    response = browser.post(PROFILE_OPTIONS)
    assert response.status_code == 409
    assert response.json() == {
        "code": "no_passkey_request",
        "message": "Prove it is you again before adding a passkey.",
        "details": {},
    }
    assert response["Cache-Control"] == "no-store"

    sms_proof(browser, customer)
    refused = prove(browser, "sms", "000000")
    assert refused.status_code == 200
    assert "does not prove it is you" in refused.text
    assert browser.post(PROFILE_OPTIONS).status_code == 409
    assert not WebAuthnCredential.objects.exists()


def test_the_options_need_a_signed_in_customer_and_a_post(client, customer):
    assert client.post(PROFILE_OPTIONS).status_code == 302  # to the sign-in page
    client.force_login(customer)
    assert client.get(PROFILE_OPTIONS).status_code == 405


def test_an_answer_to_another_sessions_proof_adds_nothing(browser, customer, phone):
    assert prove(browser, "sms", sms_proof(browser, customer)).status_code == 302
    options = creation_options(browser)
    # Someone else signed in to the account (a stolen password) finds nothing to answer.
    intruder = Client()
    intruder.force_login(customer)
    assert intruder.post(PROFILE_OPTIONS).status_code == 409
    response = post_new_passkey(intruder, phone.create(options))
    assert "Prove it is you again" in " ".join(messages_of(response))
    assert not WebAuthnCredential.objects.exists()
    # The owner's own request is untouched and still works.
    post_new_passkey(browser, phone.create(options))
    assert WebAuthnCredential.objects.filter(user=customer).count() == 1


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        (
            lambda answer: {**answer, "response": {**answer["response"], "clientDataJSON": "e30"}},
            "malformed",
        ),
        (lambda answer: "not json", "malformed"),
        (lambda answer: [answer], "malformed"),
    ],
)
def test_a_bad_new_passkey_is_refused_counted_and_audited(browser, customer, phone, tamper, why):
    prove(browser, "sms", sms_proof(browser, customer))
    answer = tamper(phone.create(creation_options(browser)))
    response = post_new_passkey(browser, answer if isinstance(answer, str) else json.dumps(answer))
    assert response.status_code == 302
    assert "could not be added" in " ".join(messages_of(response))
    assert not WebAuthnCredential.objects.exists()
    [refused] = events("factor.passkey_refused")
    assert refused.data == {"user_id": customer.pk, "result": "code_invalid", "why": why}
    assert PasskeyChallenge.objects.get(user=customer, purpose=Purpose.FACTOR_CHANGE).failures == 1


def test_a_new_passkey_from_another_origin_is_refused(browser, customer, phone):
    prove(browser, "sms", sms_proof(browser, customer))
    options = creation_options(browser)
    phone.origin = "https://activation-rescue.example.net"
    post_new_passkey(browser, phone.create(options))
    assert not WebAuthnCredential.objects.exists()
    assert events("factor.passkey_refused")[0].data["why"] == "origin"


def test_the_passkey_list_shows_when_each_was_last_used(browser, customer, phone, clock):
    passkey = add_passkey(browser, customer, phone)
    case = open_failed_case(customer)
    assert verify_with_passkey(browser, case, phone).status_code == 302
    passkey.refresh_from_db()
    assert passkey.last_used_at == timezone.now()
    page = browser.get(PROFILE)
    assert "last used" in page.text
    assert "not used yet" not in page.text


def test_removing_a_passkey_needs_proof(browser, customer, phone, clock):
    passkey = add_passkey(browser, customer, phone)
    clock.shift(COOLDOWN)
    sms_proof(browser, customer)

    wrong = remove(browser, passkey, "sms", "000000")
    assert wrong.status_code == 200
    assert "does not prove it is you" in wrong.text
    assert WebAuthnCredential.objects.filter(pk=passkey.pk).exists()
    assert not events("factor.passkey_removed")
    # An app the customer does not have proves nothing either.
    remove(browser, passkey, "totp", "123456")
    assert WebAuthnCredential.objects.filter(pk=passkey.pk).exists()

    clock.shift(COOLDOWN)
    response = remove(browser, passkey, "sms", sms_proof(browser, customer))
    assert response.status_code == 302
    assert not WebAuthnCredential.objects.filter(pk=passkey.pk).exists()
    [removed] = events("factor.passkey_removed")
    assert removed.data == {"user_id": customer.pk, "passkey": passkey.pk, "name": "My phone"}
    assert "My phone" not in browser.get(PROFILE).text


def test_a_customer_cannot_remove_another_customers_passkey(
    browser, customer, other_customer, phone, clock
):
    other_browser = Client()
    other_browser.force_login(other_customer)
    theirs = add_passkey(other_browser, other_customer, phone)
    add_passkey(browser, customer, phone, name="Mine")
    clock.shift(COOLDOWN)
    response = remove(browser, theirs, "sms", sms_proof(browser, customer))
    assert response.status_code == 200  # not one of the choices: a form error
    assert WebAuthnCredential.objects.filter(pk=theirs.pk).exists()
    assert not events("factor.passkey_removed")


def test_staff_cannot_manage_passkeys_on_the_customer_page(client, agent):
    client.force_login(agent)
    proof = {"action": "passkey_prove", "passkey-proof_channel": "sms", "passkey-proof_code": "1"}
    response = client.post(PROFILE, proof)
    assert response.status_code == 302
    assert response["Location"] == "/backoffice/"  # staff are sent to the back office
    assert client.post(PROFILE_OPTIONS).status_code == 302
    assert not PasskeyChallenge.objects.exists()


# --- Activation with a passkey --------------------------------------------------------------


def retry_url(case) -> str:
    return f"/activation/{case.pk}/retry/"


def use_passkey(browser: Client, case):
    return browser.post(retry_url(case), {"action": "use_passkey"})


def request_options(browser: Client, case):
    return browser.post(f"/activation/{case.pk}/passkey-options/")


def passkey_request(browser: Client, case) -> dict:
    """Press "Use my passkey", then fetch the request as the page's script does."""
    use_passkey(browser, case)
    response = request_options(browser, case)
    assert response.status_code == 200, response.content
    return response.json()["options"]


def post_answer(browser: Client, case, answer, **extra):
    body = answer if isinstance(answer, str) else json.dumps(answer)
    data = {"action": "verify_passkey", "code": body, "submission_id": str(uuid.uuid4())}
    return browser.post(retry_url(case), {**data, **extra})


def verify_with_passkey(browser: Client, case, phone: SoftAuthenticator, **tweaks):
    return post_answer(browser, case, phone.get(passkey_request(browser, case), **tweaks))


@pytest.fixture
def passkey(browser, customer, phone, clock):
    """The customer's passkey, added on My account; the clock then moves past the cooldown."""
    added = add_passkey(browser, customer, phone)
    clock.shift(COOLDOWN)
    return added


@pytest.fixture
def case(customer):
    return open_failed_case(customer)


def request_row(customer) -> PasskeyChallenge:
    return PasskeyChallenge.objects.get(user=customer, purpose=Purpose.ACTIVATION)


def assert_nothing_changed(case) -> None:
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION
    assert not CoreRequest.objects.filter(case=case).exists()
    assert not CaseEvent.objects.filter(case=case, kind="verification.succeeded").exists()


def last_failure(case) -> dict:
    return CaseEvent.objects.filter(case=case, kind="verification.failed").latest("seq").data


def test_a_failed_activation_is_verified_with_a_passkey(
    browser, customer, phone, passkey, case, django_capture_on_commit_callbacks
):
    page = browser.get(retry_url(case))
    assert "Use my passkey (fingerprint or face)" in page.text

    response = use_passkey(browser, case)
    assert response.status_code == 302
    page = browser.get(retry_url(case))
    assert "Verify with my passkey and activate" in page.text
    started = CaseEvent.objects.get(case=case, kind="verification.started")
    assert started.data == {"channel": "passkey"}

    options = request_options(browser, case)
    assert options.status_code == 200
    assert options["Cache-Control"] == "no-store"
    request = options.json()["options"]
    assert request["rpId"] == "localhost"
    assert request["userVerification"] == "required"
    assert [item["id"] for item in request["allowCredentials"]] == [phone.credentials[0].id]

    with django_capture_on_commit_callbacks(execute=False):
        response = post_answer(browser, case, phone.get(request))
    assert response.status_code == 302
    assert response["Location"] == f"/activation/{case.pk}/"
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING
    [core_request] = CoreRequest.objects.filter(case=case)
    assert core_request.payload["verification"]["method"] == "passkey"
    succeeded = CaseEvent.objects.get(case=case, kind="verification.succeeded")
    assert succeeded.data["channel"] == "passkey"
    assert succeeded.data["passkey"] == passkey.pk
    assert not CaseEvent.objects.filter(case=case, kind="verification.failed").exists()
    passkey.refresh_from_db()
    assert passkey.sign_count == 1
    assert not PasskeyChallenge.objects.filter(user=customer).exists()


def test_the_same_answer_posted_again_after_success_changes_nothing(
    browser, customer, phone, passkey, case
):
    answer = phone.get(passkey_request(browser, case))
    submission = str(uuid.uuid4())
    first = post_answer(browser, case, answer, submission_id=submission)
    again = post_answer(browser, case, answer, submission_id=submission)
    replay = post_answer(browser, case, answer)  # a new form id: checked afresh
    assert first["Location"] == again["Location"] == replay["Location"] == f"/activation/{case.pk}/"
    assert CoreRequest.objects.filter(case=case).count() == 1
    assert CaseEvent.objects.filter(case=case, kind="verification.succeeded").count() == 1
    assert not CaseEvent.objects.filter(case=case, kind="verification.failed").exists()


def test_an_old_answer_replayed_against_a_new_request_is_refused_and_counted(
    browser, customer, phone, passkey, case, clock
):
    old_answer = phone.get(passkey_request(browser, case))
    # The customer asks again (a reload) before the answer is posted: the old request is gone.
    new_request = passkey_request(browser, case)
    response = post_answer(browser, case, old_answer)
    assert response["Location"] == retry_url(case)
    assert "not accepted" in " ".join(messages_of(response))
    assert request_row(customer).failures == 1
    assert last_failure(case) == {
        "channel": "passkey",
        "result": "code_invalid",
        "why": "challenge",
    }
    assert_nothing_changed(case)
    # The new request still works.
    clock.shift(5)
    post_answer(browser, case, phone.get(new_request))
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING


def test_an_answer_that_activated_one_case_is_refused_for_the_next(
    browser, customer, phone, passkey, case
):
    used = phone.get(passkey_request(browser, case))
    post_answer(browser, case, used)
    second = open_failed_case(customer)
    passkey_request(browser, second)
    response = post_answer(browser, second, used)
    assert response["Location"] == retry_url(second)
    assert request_row(customer).failures == 1
    assert_nothing_changed(second)


def test_an_expired_request_is_refused_and_counted(
    browser, customer, phone, passkey, case, clock, settings
):
    answer = phone.get(passkey_request(browser, case))
    clock.shift(settings.OTP_WEBAUTHN_TIMEOUT_SECONDS + 1)
    response = post_answer(browser, case, answer)
    assert "timed out" in " ".join(messages_of(response))
    assert request_row(customer).failures == 1
    assert last_failure(case)["why"] == "expired"
    # Only asked again: an expired passkey request does not fail the attempt.
    assert_nothing_changed(case)


def test_an_answer_from_another_origin_is_refused_and_counted(
    browser, customer, phone, passkey, case
):
    response = verify_with_passkey(
        browser, case, phone, origin="https://activation-rescue.example.net"
    )
    assert response["Location"] == retry_url(case)
    assert request_row(customer).failures == 1
    assert last_failure(case) == {"channel": "passkey", "result": "code_invalid", "why": "origin"}
    assert_nothing_changed(case)


def test_an_answer_without_user_verification_is_refused_and_counted(
    browser, customer, phone, passkey, case
):
    verify_with_passkey(browser, case, phone, user_verified=False)
    assert request_row(customer).failures == 1
    assert last_failure(case)["why"] == "user_verification"
    assert_nothing_changed(case)


def test_a_counter_gone_backwards_is_refused_and_counted(browser, customer, phone, passkey, case):
    # The server saw this passkey count to 41: an answer at 8 comes from a copy of the key.
    WebAuthnCredential.objects.filter(pk=passkey.pk).update(sign_count=41)
    verify_with_passkey(browser, case, phone, sign_count=8)
    assert request_row(customer).failures == 1
    assert last_failure(case)["why"] == "counter"
    assert_nothing_changed(case)
    passkey.refresh_from_db()
    assert passkey.sign_count == 41


def test_another_customers_passkey_is_refused_and_counted(
    browser, customer, other_customer, phone, passkey, case
):
    other_browser = Client()
    other_browser.force_login(other_customer)
    theirs = add_passkey(other_browser, other_customer, phone, name="Theirs")
    [their_key] = [c for c in phone.credentials if c.credential_id == theirs.credential_id]
    verify_with_passkey(browser, case, phone, credential=their_key)
    assert request_row(customer).failures == 1
    assert last_failure(case)["why"] == "other_account"
    assert_nothing_changed(case)
    theirs.refresh_from_db()
    assert (theirs.sign_count, theirs.last_used_at) == (0, None)


def test_a_passkey_the_server_never_saw_is_refused_and_counted(
    browser, customer, phone, passkey, case
):
    stranger = SoftAuthenticator()
    stranger.create({"user": {"id": "AAAA"}, "challenge": "AAAA"})
    verify_with_passkey(browser, case, stranger, credential=stranger.credentials[0])
    assert request_row(customer).failures == 1
    assert last_failure(case)["why"] == "unknown_passkey"
    assert_nothing_changed(case)


def _garbled(answer: dict) -> dict:
    return {**answer, "response": {**answer["response"], "signature": "!!not base64!!"}}


def _without(field: str):
    return lambda answer: {
        **answer,
        "response": {k: v for k, v in answer["response"].items() if k != field},
    }


MALFORMED = {
    "not_json": lambda answer: "{not json",
    "json_list": lambda answer: [answer],
    "json_string": lambda answer: json.dumps("public-key"),
    "garbage_base64": _garbled,
    "bad_signature": lambda answer: {
        **answer,
        "response": {**answer["response"], "signature": answer["response"]["signature"][:-8]},
    },
    "missing_response": lambda answer: {k: v for k, v in answer.items() if k != "response"},
    "missing_authenticator_data": _without("authenticatorData"),
    "missing_client_data": _without("clientDataJSON"),
    "missing_signature": _without("signature"),
    "missing_raw_id": lambda answer: {k: v for k, v in answer.items() if k != "rawId"},
}


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_answer_is_refused_and_counted_never_a_500(
    browser, customer, phone, passkey, case, kind
):
    answer = MALFORMED[kind](phone.get(passkey_request(browser, case)))
    response = post_answer(browser, case, answer)
    assert response.status_code == 302
    assert response["Location"] == retry_url(case)
    assert "not accepted" in " ".join(messages_of(response))
    assert request_row(customer).failures == 1
    assert last_failure(case)["result"] == "code_invalid"
    assert_nothing_changed(case)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("x" * 20_000, "not one a passkey gives"),
        ("", "sent no answer"),
    ],
)
def test_an_oversized_or_empty_answer_is_refused_by_the_form(
    browser, customer, phone, passkey, case, body, message
):
    passkey_request(browser, case)
    response = post_answer(browser, case, body)
    assert response["Location"] == retry_url(case)
    assert message in " ".join(messages_of(response))
    # Not a passkey's answer at all, so never checked: the request keeps its count.
    assert request_row(customer).failures == 0
    assert_nothing_changed(case)


def test_an_answer_to_a_request_made_in_another_session_is_refused(
    browser, customer, phone, passkey, case
):
    answer = phone.get(passkey_request(browser, case))
    intruder = Client()
    intruder.force_login(customer)
    response = post_answer(intruder, case, answer)
    assert response["Location"] == retry_url(case)
    assert "asked for elsewhere" in " ".join(messages_of(response))
    assert last_failure(case) == {"channel": "passkey", "result": "no_code", "why": "no_request"}
    assert_nothing_changed(case)
    # The request is this browser's: the intruder's post neither used nor burned it.
    assert request_row(customer).failures == 0
    post_answer(browser, case, answer)
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING


def test_an_answer_for_one_case_is_refused_for_another(browser, customer, phone, passkey, case):
    other_case = open_failed_case(customer)
    use_passkey(browser, other_case)
    answer = phone.get(passkey_request(browser, case))
    response = post_answer(browser, other_case, answer)
    assert response["Location"] == retry_url(other_case)
    assert last_failure(other_case)["why"] == "no_request"
    assert_nothing_changed(other_case)
    assert_nothing_changed(case)
    # A request for the other case replaces this one, and the answer is wrong for it.
    passkey_request(browser, other_case)
    post_answer(browser, other_case, answer)
    assert request_row(customer).failures == 1
    assert last_failure(other_case)["why"] == "challenge"
    assert_nothing_changed(other_case)


def test_an_answer_is_refused_until_a_request_was_made(browser, customer, phone, passkey, case):
    use_passkey(browser, case)
    answer = phone.get({"challenge": "AAAAAAAAAAAAAAAAAAAAAA", "allowCredentials": []})
    response = post_answer(browser, case, answer)
    assert "asked for elsewhere" in " ".join(messages_of(response))
    assert_nothing_changed(case)
    assert not PasskeyChallenge.objects.filter(user=customer, purpose=Purpose.ACTIVATION).exists()


def test_five_wrong_answers_burn_the_request_and_fail_the_case_like_a_burned_code(
    browser, customer, phone, passkey, case, clock, settings
):
    request = passkey_request(browser, case)
    for attempt in range(1, settings.VERIFICATION_MAX_ATTEMPTS_PER_CODE + 1):
        response = post_answer(browser, case, phone.get(request, user_verified=False))
        if attempt < settings.VERIFICATION_MAX_ATTEMPTS_PER_CODE:
            assert request_row(customer).failures == attempt
        clock.shift(20)  # past the throttle's growing pause
    assert "Too many passkey answers were refused" in " ".join(messages_of(response))
    assert not PasskeyChallenge.objects.filter(user=customer, purpose=Purpose.ACTIVATION).exists()
    case.refresh_from_db()
    assert (case.state, case.failure_reason) == (CaseState.FAILED, "too_many_attempts")
    assert not CoreRequest.objects.filter(case=case).exists()
    assert last_failure(case)["result"] == "too_many_attempts"
    # A right answer to the burned request is too late.
    post_answer(browser, case, phone.get(request))
    case.refresh_from_db()
    assert case.state == CaseState.FAILED
    page = browser.get(f"/activation/{case.pk}/")
    assert page.status_code == 200


def test_wrong_answers_in_quick_succession_are_throttled_not_counted(
    browser, customer, phone, passkey, case
):
    request = passkey_request(browser, case)
    post_answer(browser, case, phone.get(request, user_verified=False))
    response = post_answer(browser, case, phone.get(request))  # no pause: throttled
    assert "Too many tries in a row" in " ".join(messages_of(response))
    assert request_row(customer).failures == 1
    assert last_failure(case)["result"] == "throttled"
    assert_nothing_changed(case)


def test_repeated_passkey_lock_outs_hand_the_case_to_staff(
    browser, customer, phone, passkey, case, clock, settings
):
    settings.VERIFICATION_LOCKOUTS_BEFORE_REVIEW = 2
    for _lockout in range(2):
        request = passkey_request(browser, case)
        for _attempt in range(settings.VERIFICATION_MAX_ATTEMPTS_PER_CODE):
            post_answer(browser, case, phone.get(request, origin="https://evil.example"))
            clock.shift(20)
        clock.shift(60)  # the retry page's per-minute limit
    case.refresh_from_db()
    assert (case.state, case.failure_reason) == (CaseState.NEEDS_REVIEW, "too_many_attempts")
    assert not CoreRequest.objects.filter(case=case).exists()
    assert request_options(browser, case).json() == {"redirect": f"/activation/{case.pk}/"}
    assert "Our staff are looking at your activation" in browser.get(f"/activation/{case.pk}/").text


def test_a_removed_passkey_no_longer_works(browser, customer, phone, passkey, case, clock):
    answer = phone.get(passkey_request(browser, case))
    remove(browser, passkey, "sms", sms_proof(browser, customer))
    assert not WebAuthnCredential.objects.filter(user=customer).exists()

    response = post_answer(browser, case, answer)
    assert response["Location"] == retry_url(case)
    assert request_row(customer).failures == 1
    assert last_failure(case)["why"] == "unknown_passkey"
    assert_nothing_changed(case)
    # And no new request is made for a customer with no passkey.
    clock.shift(5)
    refused = request_options(browser, case)
    assert refused.status_code == 409
    assert refused.json()["code"] == "no_passkey_request"
    assert "Use my passkey" not in browser.get(f"{retry_url(case)}?choose=1").text


def test_the_options_of_a_case_that_is_not_waiting_for_verification_redirect(
    browser, customer, phone, passkey, case
):
    # A failed case not yet reopened: nothing to answer, the page is told where to go.
    response = request_options(browser, case)
    assert response.status_code == 200
    assert response.json() == {"redirect": f"/activation/{case.pk}/"}
    assert not PasskeyChallenge.objects.filter(user=customer, purpose=Purpose.ACTIVATION).exists()


def test_the_options_of_another_customers_case_are_not_found(
    browser, other_customer, phone, passkey
):
    theirs = open_failed_case(other_customer)
    assert request_options(browser, theirs).status_code == 404
    assert browser.get(f"/activation/{theirs.pk}/passkey-options/").status_code == 405


def test_passkey_requests_have_an_hourly_budget_of_their_own(
    browser, customer, phone, passkey, case, settings, clock
):
    """Found by an outside attack: cancelled prompts used to spend the SMS fallback's budget."""
    settings.VERIFICATION_MAX_CODES_PER_HOUR_PER_CUSTOMER = 2
    use_passkey(browser, case)
    assert request_options(browser, case).status_code == 200
    assert request_options(browser, case).status_code == 200
    refused = request_options(browser, case)
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_codes"

    sent_before = len(LocmemBackend.outbox)
    browser.post(retry_url(case), {"action": "send", "channel": "sms"})
    assert len(LocmemBackend.outbox) == sent_before + 1


def test_an_answer_nested_thousands_deep_is_refused_and_counted_never_a_500(
    browser, customer, phone, passkey, case
):
    """Found by an outside attack: json.loads raised RecursionError, a 500."""
    passkey_request(browser, case)
    response = post_answer(browser, case, "[" * 15_000)
    assert response.status_code == 302
    assert "not accepted" in " ".join(messages_of(response))
    assert request_row(customer).failures == 1
    assert last_failure(case)["why"] == "malformed"
    assert_nothing_changed(case)


# --- The checkpoint's step-up ---------------------------------------------------------------


@pytest.fixture
def step_up_everyone(db):
    """A live rule set that asks every account younger than a year for a stronger factor."""
    RuleSetVersion.objects.filter(status=RuleSetVersion.Status.LIVE).update(
        status=RuleSetVersion.Status.RETIRED
    )
    version = RuleSetVersion.objects.create(
        number=(RuleSetVersion.objects.order_by("-number").first().number + 1),
        status=RuleSetVersion.Status.LIVE,
        step_up_at=40,
        review_at=90,
        published_at=timezone.now(),
    )
    Rule.objects.create(version=version, kind="young_account", params={"days": 365}, score=50)
    return version


def test_an_established_passkey_answers_a_step_up_on_its_own(
    client, phone, time_machine, step_up_everyone
):
    now = timezone.now()
    time_machine.move_to(now - timedelta(days=4), tick=False)
    customer = CustomerFactory()
    client.force_login(customer)
    passkey = add_passkey(client, customer, phone)
    time_machine.move_to(now, tick=False)
    case = open_failed_case(customer)

    response = client.post(retry_url(case), {"action": "send", "channel": "sms"})
    assert "please confirm with your passkey" in " ".join(messages_of(response))
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION
    assert CaseEvent.objects.filter(case=case, kind="risk.step_up_required").exists()

    post_answer(client, case, phone.get(passkey_request(client, case)))
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING
    assert case.risk_level == "medium"
    [core_request] = CoreRequest.objects.filter(case=case)
    assert core_request.payload["verification"]["method"] == "passkey"
    succeeded = CaseEvent.objects.get(case=case, kind="verification.succeeded")
    assert succeeded.data["passkey"] == passkey.pk


def test_a_new_passkey_beside_an_established_one_does_not_answer_a_step_up(
    client, phone, time_machine, step_up_everyone
):
    """Found by an outside attack: any old passkey on the account made every passkey count.

    A SIM swapper proves with an SMS code, adds a passkey of his own and answers with it.
    """
    now = timezone.now()
    time_machine.move_to(now - timedelta(days=4), tick=False)
    customer = CustomerFactory()
    client.force_login(customer)
    owners = add_passkey(client, customer, phone, name="Owner's phone")
    time_machine.move_to(now, tick=False)
    case = open_failed_case(customer)
    swapper_phone = SoftAuthenticator()
    swappers = add_passkey(client, customer, swapper_phone, name="Swapper's phone")
    assert swappers.pk != owners.pk

    response = post_answer(client, case, swapper_phone.get(passkey_request(client, case)))
    assert "please confirm with your passkey" in " ".join(messages_of(response))
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION
    assert not CoreRequest.objects.filter(case=case).exists()

    # The owner's own, older passkey still does.
    post_answer(client, case, phone.get(request_options(client, case).json()["options"]))
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING
    assert (
        CaseEvent.objects.filter(case=case, kind="verification.succeeded")
        .latest("seq")
        .data["passkey"]
        == owners.pk
    )


def test_a_passkey_added_minutes_ago_does_not_answer_a_step_up(
    browser, customer, phone, passkey, case, step_up_everyone
):
    use_passkey(browser, case)
    case.refresh_from_db()
    assert (case.state, case.failure_reason, case.failure_detail) == (
        CaseState.NEEDS_REVIEW,
        "risk_review",
        "step_up_without_factor",
    )
    assert not CaseEvent.objects.filter(case=case, kind="verification.started").exists()
    assert not PasskeyChallenge.objects.filter(user=customer, purpose=Purpose.ACTIVATION).exists()
    assert not CoreRequest.objects.filter(case=case).exists()


def test_a_new_passkey_after_a_step_up_is_not_enough_and_the_app_is_asked_for(
    browser, customer, phone, passkey, case, step_up_everyone
):
    give_app(customer)  # set up sixty days ago
    response = use_passkey(browser, case)
    assert "authenticator app" in " ".join(messages_of(response))
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION
    assert not CaseEvent.objects.filter(case=case, kind="verification.started").exists()

    # The passkey's right answer at the submit is thanked for, and the app still asked for.
    options = request_options(browser, case).json()["options"]
    response = post_answer(browser, case, phone.get(options))
    assert "also use the code from your authenticator app" in " ".join(messages_of(response))
    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION
    assert not CoreRequest.objects.filter(case=case).exists()

    browser.post(
        retry_url(case),
        {"action": "verify", "code": app_code(customer), "submission_id": str(uuid.uuid4())},
    )
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING
    assert CoreRequest.objects.get(case=case).payload["verification"]["method"] == Channel.TOTP
