"""The checkpoint's scenarios, played through the real sign-in and retry views.

Each customer uses a ``Phone`` (a test client with one browser's headers, address and device
cookie); codes come from the locmem SMS backend or the customer's authenticator app. The live
rule set is the default v1 the migration ships (step up at 40, review at 90).
"""

import re
from datetime import timedelta

import pyotp
import pytest
import time_machine
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from activation.models import ActivationCase, CaseEvent, CaseState
from risk.middleware import DEVICE_COOKIE
from risk.models import Evaluation, FiredRule, ListEntry, Moment, Rule, RuleSetVersion
from tests.factories import CustomerFactory, StaffFactory, open_failed_case
from tests.fixtures import last_sms_code
from verification.sms import LocmemBackend

from .conftest import (
    HOME_ADDRESS,
    IPHONE_FACTS,
    IPHONE_UA,
    OFFICE_ADDRESS,
    PIXEL_FACTS,
    VPN_ADDRESS,
    VPN_RANGE,
    Phone,
    app_code,
    established_customer,
    fired_kinds,
    give_app,
    last_risk_event,
    visible_text,
)

pytestmark = pytest.mark.django_db

ACCUSING_WORDS = ("fraud", "suspect", "suspicious", "欺诈", "可疑", "嫌疑")


def sms_sent_to(customer) -> int:
    return sum(1 for message in LocmemBackend.outbox if message["to"] == str(customer.phone_number))


def activate_with_sms(phone: Phone, customer, case: ActivationCase) -> None:
    """The honest path: sign in, ask for an SMS code, enter it; the case goes to the core.

    The outbox is emptied afterwards, so a test counts only the messages that follow.
    """
    response = phone.sign_in(customer)
    assert response.status_code == 302, "sign-in refused"
    phone.send(case)
    response = phone.verify(case, last_sms_code(str(customer.phone_number)))
    assert response["Location"] == reverse("activation:detail", args=[case.pk])
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING
    LocmemBackend.outbox.clear()


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


# --- a fraud ring ----------------------------------------------------------------------------


def test_a_fraud_ring_of_twenty_customers_on_one_phone_is_stopped_and_then_reviewed(phone):
    ring_phone = phone(facts=PIXEL_FACTS)
    # A ring's accounts are fresh: opened today (the factory's customers join now).
    customers = CustomerFactory.create_batch(20)
    cases = [open_failed_case(customer) for customer in customers]
    outcomes = []
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for customer, case in zip(customers, cases, strict=True):
            # One every 50 minutes: twenty in less than a day, on the same device cookie.
            clock.shift(timedelta(minutes=50))
            assert ring_phone.sign_in(customer).status_code == 302
            ring_phone.send(case)
            case.refresh_from_db()
            if case.state == CaseState.PENDING_VERIFICATION and sms_sent_to(customer):
                ring_phone.verify(case, last_sms_code(str(customer.phone_number)))
                case.refresh_from_db()
            outcomes.append(case)

    stopped = [case for case in outcomes if case.state != CaseState.SUBMITTING]
    assert len(stopped) >= 18
    # Once stopped, every later customer on that phone is stopped too, and nothing was sent.
    first_stopped = outcomes.index(stopped[0])
    assert outcomes[first_stopped:] == stopped
    assert all(sms_sent_to(case.credit_line.customer) == 0 for case in stopped)
    for case in stopped:
        assert (case.state, case.failure_reason) == (CaseState.NEEDS_REVIEW, "risk_review")

    # The first account on the phone looks like anyone's first activation: it goes through.
    first = last_risk_event(outcomes[0], Moment.CODE_REQUEST)
    assert (first["decision"], fired_kinds(first)) == ("allow", {"young_account"})
    # The second to the fourth: a young account on a device others used today is asked for a
    # stronger factor it does not have, so staff.
    assert first_stopped == 1
    for case in outcomes[1:4]:
        event = last_risk_event(case, Moment.CODE_REQUEST)
        assert event["decision"] == "step_up"
        assert {"young_account", "many_customers"} <= fired_kinds(event)
        assert (case.failure_detail, case.risk_level) == ("step_up_without_factor", "medium")
    # From the fifth on, reviewed outright (not merely stepped up): the device's crowd did it.
    for case in outcomes[4:]:
        assert (case.failure_detail, case.risk_level) == ("review", "high")
        event = last_risk_event(case, Moment.CODE_REQUEST)
        assert event["decision"] == "review"
        assert event["live"]["version"] == 1
        assert event["live"]["score"] >= 90
        crowd = [
            item["params"] for item in event["live"]["fired"] if item["kind"] == "many_customers"
        ]
        assert {"key": "device", "more_than": 4} in crowd
        assert event["signals"]["velocity"]["device_customers"] > 4


# --- shared devices --------------------------------------------------------------------------

FAMILY_PC_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
FAMILY_PC_FACTS = {
    "screen": "1920x1080",
    "dpr": "1",
    "tz": "Asia/Shanghai",
    "platform": "Win32",
    "touch": "0",
}


def test_a_young_account_on_a_device_another_customer_used_today_is_stepped_up(phone):
    shared = phone(facts=PIXEL_FACTS)
    owner = established_customer()
    activate_with_sms(shared, owner, open_failed_case(owner))

    # An account opened yesterday, on the phone another customer used today: more proof.
    newcomer = CustomerFactory(date_joined=timezone.now() - timedelta(days=1))
    case = open_failed_case(newcomer)
    shared.sign_in(newcomer)
    shared.send(case)
    case.refresh_from_db()
    event = last_risk_event(case, Moment.CODE_REQUEST)
    assert (event["decision"], event["live"]["score"]) == ("step_up", 40)
    assert fired_kinds(event) == {"young_account", "many_customers"}
    assert (case.state, case.failure_detail, case.risk_level) == (
        CaseState.NEEDS_REVIEW,
        "step_up_without_factor",
        "medium",
    )
    assert sms_sent_to(newcomer) == 0

    # An established account on that phone the same day is not asked for more.
    relative = established_customer()
    case = open_failed_case(relative)
    activate_with_sms(shared, relative, case)
    event = last_risk_event(case, Moment.CODE_REQUEST)
    assert (event["decision"], fired_kinds(event)) == ("allow", {"many_customers"})


def test_a_household_on_one_computer_passes_and_a_crowd_on_it_does_not(phone):
    """Up to three established customers on one computer in a day pass with an SMS code; a
    fourth needs a stronger factor; from the fifth on, staff look first."""
    computer = phone(user_agent=FAMILY_PC_UA, facts=FAMILY_PC_FACTS)
    family = [established_customer() for _member in range(5)]
    give_app(family[3])
    now = timezone.now()
    for days_ago, member in zip((50, 40, 30, 20, 10), family, strict=True):
        # Each activated on it before, days apart: it is every member's known computer.
        with time_machine.travel(now - timedelta(days=days_ago), tick=False):
            activate_with_sms(computer, member, open_failed_case(member))

    cases = [open_failed_case(member) for member in family]
    with time_machine.travel(now, tick=False) as clock:
        # All of them come back the same day, half an hour apart.
        for member, case in zip(family[:3], cases[:3], strict=True):
            clock.shift(timedelta(minutes=30))
            activate_with_sms(computer, member, case)
            event = last_risk_event(case, Moment.CODE_REQUEST)
            assert (event["decision"], event["signals"]["device_recognised"]) == (
                "allow",
                "cookie",
            )
            assert event["live"]["score"] <= 25

        clock.shift(timedelta(minutes=30))
        fourth, fourth_case = family[3], cases[3]
        computer.sign_in(fourth)
        computer.send(fourth_case)
        event = last_risk_event(fourth_case, Moment.CODE_REQUEST)
        assert (event["decision"], fired_kinds(event)) == ("step_up", {"many_customers"})
        assert event["signals"]["velocity"]["device_customers"] == 4
        assert sms_sent_to(fourth) == 0
        computer.verify(fourth_case, app_code(fourth))
        fourth_case.refresh_from_db()
        assert (fourth_case.state, fourth_case.risk_level) == (CaseState.SUBMITTING, "medium")

        clock.shift(timedelta(minutes=30))
        fifth, fifth_case = family[4], cases[4]
        computer.sign_in(fifth)
        computer.send(fifth_case)
        fifth_case.refresh_from_db()
        assert (fifth_case.state, fifth_case.failure_detail, fifth_case.risk_level) == (
            CaseState.NEEDS_REVIEW,
            "review",
            "high",
        )
        event = last_risk_event(fifth_case, Moment.CODE_REQUEST)
        assert event["decision"] == "review"
        assert event["live"]["score"] >= 90
        assert sms_sent_to(fifth) == 0


# --- SIM swap --------------------------------------------------------------------------------


def test_a_sim_swap_needs_the_app_and_the_sms_alone_is_not_enough(phone):
    customer = established_customer()
    give_app(customer)
    now = timezone.now()
    with time_machine.travel(now - timedelta(days=30), tick=False):
        activate_with_sms(phone(facts=PIXEL_FACTS), customer, open_failed_case(customer))
    with time_machine.travel(now - timedelta(days=1), tick=False):
        customer.phone_number = "+8613999990000"
        customer.save()
    customer.refresh_from_db()
    assert customer.phone_number_changed_at < now - timedelta(hours=23)

    new_phone = phone(user_agent=IPHONE_UA, facts=IPHONE_FACTS, address=OFFICE_ADDRESS)
    case = open_failed_case(customer)
    assert new_phone.sign_in(customer).status_code == 302
    response = new_phone.send(case, "sms")

    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION
    assert sms_sent_to(customer) == 0, "an SMS code was sent although it cannot be enough"
    event = last_risk_event(case, Moment.CODE_REQUEST)
    assert event["decision"] == "step_up"
    assert event["live"]["version"] == 1
    assert {"new_device", "phone_changed_new_device"} <= fired_kinds(event)
    assert CaseEvent.objects.filter(case=case, kind="risk.step_up_required").exists()
    warning = " ".join(messages_of(response))
    assert "authenticator app" in warning
    assert not any(word in warning.lower() for word in ACCUSING_WORDS)

    # Asking again for an SMS changes nothing: still no code by SMS.
    new_phone.send(case, "sms")
    assert sms_sent_to(customer) == 0

    response = new_phone.verify(case, app_code(customer))
    assert response["Location"] == reverse("activation:detail", args=[case.pk])
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING
    assert case.risk_level == "medium"
    submit = last_risk_event(case, Moment.CODE_SUBMIT)
    assert (submit["channel"], submit["decision"]) == ("totp", "step_up")


def test_a_sim_swap_without_an_app_goes_to_staff(phone):
    customer = established_customer()
    now = timezone.now()
    with time_machine.travel(now - timedelta(days=30), tick=False):
        activate_with_sms(phone(facts=PIXEL_FACTS), customer, open_failed_case(customer))
    with time_machine.travel(now - timedelta(days=1), tick=False):
        customer.phone_number = "+8613999990001"
        customer.save()

    case = open_failed_case(customer)
    new_phone = phone(user_agent=IPHONE_UA, facts=IPHONE_FACTS, address=OFFICE_ADDRESS)
    new_phone.sign_in(customer)
    new_phone.send(case, "sms")
    case.refresh_from_db()
    assert (case.state, case.failure_reason) == (CaseState.NEEDS_REVIEW, "risk_review")
    assert sms_sent_to(customer) == 0


@pytest.mark.parametrize("first_try", ["sms", "app"])
def test_an_app_set_up_after_the_number_changed_does_not_answer_a_sim_swap(phone, first_try):
    """Whoever took over the number can text themselves a code and set up an app of their own."""
    customer = established_customer()
    now = timezone.now()
    with time_machine.travel(now - timedelta(days=30), tick=False):
        activate_with_sms(phone(facts=PIXEL_FACTS), customer, open_failed_case(customer))
    with time_machine.travel(now - timedelta(days=1), tick=False):
        customer.phone_number = "+8613999990002"
        customer.save()
    give_app(customer, days_ago=0.5)

    case = open_failed_case(customer)
    swapper = phone(user_agent=IPHONE_UA, facts=IPHONE_FACTS, address=OFFICE_ADDRESS)
    swapper.sign_in(customer)
    if first_try == "sms":
        swapper.send(case, "sms")
    else:
        swapper.use_app(case)

    case.refresh_from_db()
    assert (case.state, case.failure_reason, case.failure_detail) == (
        CaseState.NEEDS_REVIEW,
        "risk_review",
        "step_up_without_factor",
    )
    assert sms_sent_to(customer) == 0
    assert not CaseEvent.objects.filter(case=case, kind="verification.started").exists()


NEW_PASSWORD = "a new long passphrase"


# The key of the app being set up, as the profile page shows it.
SHOWN_KEY = re.compile(r'class="secret">([A-Z2-7]+)<')


def start_app_on_profile(browser: Phone) -> str:
    """Press "set up an app" on the profile page; return the key it shows."""
    page = browser.post(reverse("profile"), {"action": "start_app"}, follow=True)
    return SHOWN_KEY.search(page.text).group(1)


def confirm_app_on_profile(browser: Phone, customer, secret: str, *, works: bool = True) -> None:
    """Confirm the app being set up with its code and an SMS code, as the profile page asks."""
    browser.post(reverse("profile"), {"action": "send_code"})
    response = browser.post(
        reverse("profile"),
        {
            "action": "confirm_app",
            "code": pyotp.TOTP(secret).now(),
            "proof_channel": "sms",
            "proof_code": last_sms_code(str(customer.phone_number)),
        },
        follow=True,
    )
    assert ("Your authenticator app is set up" in response.text) == works
    LocmemBackend.outbox.clear()


def reset_password_by_sms(browser: Phone, customer, capture) -> None:
    with capture(execute=True):
        browser.post(reverse("password_reset"), {"phone_number": str(customer.phone_number)})
    response = browser.post(
        reverse("password_reset_confirm"),
        {
            "code": last_sms_code(str(customer.phone_number)),
            "new_password1": NEW_PASSWORD,
            "new_password2": NEW_PASSWORD,
        },
    )
    assert response["Location"] == reverse("login")
    LocmemBackend.outbox.clear()


def assert_held_for_staff(case: ActivationCase) -> None:
    case.refresh_from_db()
    assert (case.state, case.failure_reason, case.failure_detail) == (
        CaseState.NEEDS_REVIEW,
        "risk_review",
        "step_up_without_factor",
    )
    assert not CaseEvent.objects.filter(case=case, kind="verification.started").exists()


def test_an_app_started_long_ago_and_confirmed_after_a_password_reset_does_not_answer_a_step_up(
    phone, django_capture_on_commit_callbacks
):
    """Whoever had the password ten days ago starts an app (no proof needed for a key that
    verifies nothing); with the SIM they reset the password, confirm an app and activate."""
    customer = established_customer()
    now = timezone.now()
    with time_machine.travel(now - timedelta(days=30), tick=False):
        activate_with_sms(phone(facts=PIXEL_FACTS), customer, open_failed_case(customer))
    swapper = phone(user_agent=IPHONE_UA, facts=IPHONE_FACTS, address=OFFICE_ADDRESS)
    with time_machine.travel(now - timedelta(days=10), tick=False):
        assert swapper.sign_in(customer).status_code == 302
        start_app_on_profile(swapper)

    reset_password_by_sms(swapper, customer, django_capture_on_commit_callbacks)
    swapper.client.cookies.pop("sessionid", None)
    signed_in = swapper.post(
        reverse("login"), {"username": customer.username, "password": NEW_PASSWORD}
    )
    assert signed_in.status_code == 302
    confirm_app_on_profile(swapper, customer, start_app_on_profile(swapper))
    assert TOTPDevice.objects.filter(user=customer, confirmed=True).count() == 1

    case = open_failed_case(customer)
    swapper.use_app(case)

    assert_held_for_staff(case)
    event = last_risk_event(case, Moment.CODE_REQUEST)
    assert (event["decision"], fired_kinds(event)) == (
        "step_up",
        {"new_device", "password_reset_new_device"},
    )
    assert sms_sent_to(customer) == 0


def test_an_app_started_long_ago_dates_from_its_confirmation_and_does_not_answer_a_step_up(
    phone,
):
    """A key started ten days ago has expired; a new one confirmed with the SIM minutes before
    the activation became a factor minutes ago, so it is not an app the customer already had."""
    customer = established_customer()
    now = timezone.now()
    with time_machine.travel(now - timedelta(days=30), tick=False):
        activate_with_sms(phone(facts=PIXEL_FACTS), customer, open_failed_case(customer))
    swapper = phone(user_agent=IPHONE_UA, facts=IPHONE_FACTS, address=OFFICE_ADDRESS)
    with time_machine.travel(now - timedelta(days=10), tick=False):
        swapper.sign_in(customer)
        secret = start_app_on_profile(swapper)

    # Ten days on the key is neither shown nor accepted any more ...
    assert SHOWN_KEY.search(swapper.get(reverse("profile")).text) is None
    confirm_app_on_profile(swapper, customer, secret, works=False)
    assert not TOTPDevice.objects.filter(user=customer, confirmed=True).exists()
    # ... so he starts a new one and confirms it with the SIM minutes before the activation
    # (past the cooldown of the SMS code he just asked for).
    with time_machine.travel(now + timedelta(minutes=2), tick=False):
        confirm_app_on_profile(swapper, customer, start_app_on_profile(swapper))
    app = TOTPDevice.objects.get(user=customer, confirmed=True)
    assert app.created_at > now - timedelta(minutes=1)

    case = open_failed_case(customer)
    swapper.use_app(case)

    assert_held_for_staff(case)
    event = last_risk_event(case, Moment.CODE_REQUEST)
    assert (event["decision"], fired_kinds(event)) == ("step_up", {"new_device"})


def change_number_yesterday(customer, number: str) -> None:
    with time_machine.travel(timezone.now() - timedelta(days=1), tick=False):
        customer.phone_number = number
        customer.save()


def test_a_look_alike_of_the_victims_phone_after_a_number_change_is_still_stepped_up(phone):
    """The very model, browser, language and settings of the victim's phone, with a cookie of
    its own: recognised by its attributes, but a number change wants the phone's cookie."""
    customer = established_customer()
    give_app(customer)
    with time_machine.travel(timezone.now() - timedelta(days=30), tick=False):
        activate_with_sms(phone(facts=PIXEL_FACTS), customer, open_failed_case(customer))
    change_number_yesterday(customer, "+8613999990003")

    look_alike = phone(facts=PIXEL_FACTS, address=OFFICE_ADDRESS)
    case = open_failed_case(customer)
    assert look_alike.sign_in(customer).status_code == 302
    response = look_alike.send(case, "sms")

    case.refresh_from_db()
    assert case.state == CaseState.PENDING_VERIFICATION
    event = last_risk_event(case, Moment.CODE_REQUEST)
    assert event["signals"]["device_recognised"] == "fingerprint"
    assert (event["decision"], fired_kinds(event)) == ("step_up", {"phone_changed_new_device"})
    assert sms_sent_to(customer) == 0
    assert "authenticator app" in " ".join(messages_of(response))
    look_alike.send(case, "sms")
    assert sms_sent_to(customer) == 0


def test_the_customers_own_phone_after_their_number_change_is_allowed(phone):
    customer = established_customer()
    own_phone = phone(facts=PIXEL_FACTS)
    with time_machine.travel(timezone.now() - timedelta(days=30), tick=False):
        activate_with_sms(own_phone, customer, open_failed_case(customer))
    change_number_yesterday(customer, "+8613999990004")

    case = open_failed_case(customer)
    activate_with_sms(own_phone, customer, case)
    event = last_risk_event(case, Moment.CODE_REQUEST)
    assert (event["decision"], event["signals"]["device_recognised"]) == ("allow", "cookie")
    assert fired_kinds(event) == set()


# --- honest customers ------------------------------------------------------------------------


def test_an_honest_customer_on_a_vpn_with_a_known_phone_is_allowed(phone, vpn_list):
    customer = established_customer()
    own_phone = phone(facts=PIXEL_FACTS)
    activate_with_sms(own_phone, customer, open_failed_case(customer))

    own_phone.move_to(VPN_ADDRESS)
    case = open_failed_case(customer)
    activate_with_sms(own_phone, customer, case)

    for moment in (Moment.CODE_REQUEST, Moment.CODE_SUBMIT):
        event = last_risk_event(case, moment)
        assert event["decision"] == "allow"
        assert fired_kinds(event) == {"network_listed"}
        assert event["live"]["version"] == 1
        assert event["signals"]["network"]["listed"] == "vpn"
        assert event["signals"]["device_recognised"] == "cookie"
    assert case.risk_level == "low"


@pytest.mark.parametrize("first_try", ["sms", "app"])
def test_an_honest_customer_on_a_new_phone_passes_with_the_app(phone, first_try):
    customer = established_customer()
    give_app(customer)
    activate_with_sms(phone(facts=PIXEL_FACTS), customer, open_failed_case(customer))

    new_phone = phone(user_agent=IPHONE_UA, facts=IPHONE_FACTS)
    case = open_failed_case(customer)
    new_phone.sign_in(customer)
    if first_try == "sms":
        response = new_phone.send(case, "sms", follow=True)
        # Asked for the app, with the reason in plain words; no SMS that could not be enough.
        assert "We do not recognise this phone or computer." in response.text
        assert "authenticator app" in response.text
        assert sms_sent_to(customer) == 0
    else:
        new_phone.use_app(case)
    response = new_phone.verify(case, app_code(customer))

    assert response["Location"] == reverse("activation:detail", args=[case.pk])
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING
    assert case.risk_level == "medium"
    request = last_risk_event(case, Moment.CODE_REQUEST)
    assert (request["decision"], fired_kinds(request)) == ("step_up", {"new_device"})


def test_an_honest_customer_on_a_new_phone_without_an_app_is_reviewed_with_a_clear_page(phone):
    customer = established_customer()
    activate_with_sms(phone(facts=PIXEL_FACTS), customer, open_failed_case(customer))

    new_phone = phone(user_agent=IPHONE_UA, facts=IPHONE_FACTS)
    case = open_failed_case(customer)
    new_phone.sign_in(customer)
    response = new_phone.send(case, "sms")

    assert response["Location"] == reverse("activation:detail", args=[case.pk])
    case.refresh_from_db()
    assert (case.state, case.failure_reason, case.risk_level) == (
        CaseState.NEEDS_REVIEW,
        "risk_review",
        "medium",
    )
    assert sms_sent_to(customer) == 0
    event = last_risk_event(case, Moment.CODE_REQUEST)
    assert (event["decision"], fired_kinds(event)) == ("step_up", {"new_device"})

    english = visible_text(new_phone.get(f"/activation/{case.pk}/").text)
    assert "A security check is needed" in english
    assert "this activation needs a quick check by our staff" in english
    chinese = visible_text(
        new_phone.get(f"/activation/{case.pk}/", HTTP_ACCEPT_LANGUAGE="zh-hans").text
    )
    assert "需要进行安全核查" in chinese
    assert "工作人员" in chinese
    for page in (english, chinese):
        assert not any(word in page.lower() for word in ACCUSING_WORDS)


def test_an_address_change_between_request_and_submit_is_still_allowed(phone):
    customer = established_customer()
    commuter = phone(facts=PIXEL_FACTS, address=HOME_ADDRESS)
    case = open_failed_case(customer)
    commuter.sign_in(customer)
    commuter.send(case)
    commuter.move_to(OFFICE_ADDRESS)  # left the house: Wi-Fi to mobile data
    commuter.verify(case, last_sms_code(str(customer.phone_number)))

    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING
    event = last_risk_event(case, Moment.CODE_SUBMIT)
    assert event["decision"] == "allow"
    assert fired_kinds(event) == {"address_changed"}
    succeeded = CaseEvent.objects.get(case=case, kind="verification.succeeded")
    assert succeeded.data["ip_changed"] == {"from": HOME_ADDRESS, "to": OFFICE_ADDRESS}


# --- shadow rules ----------------------------------------------------------------------------


def test_a_shadow_rule_records_its_decision_without_changing_the_outcome(phone):
    shadow = RuleSetVersion.objects.create(
        number=2,
        status=RuleSetVersion.Status.SHADOW,
        step_up_at=40,
        review_at=90,
        published_at=timezone.now(),
    )
    young = Rule.objects.create(
        version=shadow, kind="young_account", params={"days": 365}, score=200
    )
    customer = CustomerFactory()
    case = open_failed_case(customer)
    activate_with_sms(phone(facts=PIXEL_FACTS), customer, case)

    event = last_risk_event(case, Moment.CODE_SUBMIT)
    assert event["decision"] == "allow"
    assert event["live"]["decision"] == "allow"
    assert event["shadow"]["version"] == 2
    assert event["shadow"]["decision"] == "review"
    assert fired_kinds(event, "shadow") == {"young_account"}
    assert case.risk_level == "low"
    evaluation = Evaluation.objects.get(pk=event["evaluation"])
    assert (evaluation.decision, evaluation.shadow_decision) == ("allow", "review")
    assert FiredRule.objects.filter(evaluation=evaluation, rule=young, shadow=True).exists()


# --- staff block lists -----------------------------------------------------------------------


def test_a_blocked_device_is_held_for_review_and_cannot_sign_in_again(phone):
    customer = CustomerFactory()
    blocked_phone = phone(facts=PIXEL_FACTS)
    case = open_failed_case(customer)
    assert blocked_phone.sign_in(customer).status_code == 302

    ListEntry.objects.create(
        kind=ListEntry.Kind.DEVICE,
        value=blocked_phone.device_key,
        reason="Confirmed fraud on another case",
        status=ListEntry.Status.ACTIVE,
        proposed_by=StaffFactory(),
        decided_by=StaffFactory(),
        decided_at=timezone.now(),
    )
    response = blocked_phone.send(case)
    assert response["Location"] == reverse("activation:detail", args=[case.pk])
    case.refresh_from_db()
    assert (case.state, case.failure_reason, case.risk_level) == (
        CaseState.NEEDS_REVIEW,
        "risk_review",
        "high",
    )
    assert sms_sent_to(customer) == 0
    event = last_risk_event(case, Moment.CODE_REQUEST)
    assert (event["decision"], event["blocked_by"]) == ("block", "device")

    response = blocked_phone.sign_in(customer)
    assert response.status_code == 200
    assert not response.wsgi_request.user.is_authenticated
    text = visible_text(response.text)
    assert "We cannot sign you in online at the moment. Please call our service line." in text
    assert not any(word in text.lower() for word in (*ACCUSING_WORDS, "block"))
    # Another phone is not affected.
    assert phone(user_agent=IPHONE_UA).sign_in(customer).status_code == 302


# --- a step-up sticks to the attempt ---------------------------------------------------------


def crowd_the_vpn_range(customers: int = 16, failed_each: int = 2) -> None:
    """Earlier traffic on the VPN range: many customers, many wrong codes, in the last hour."""
    prefix = VPN_RANGE
    for customer in CustomerFactory.create_batch(customers):
        Evaluation.objects.create(
            moment=Moment.CODE_REQUEST, customer=customer, ip_prefix=prefix, decision="allow"
        )
        for _try in range(failed_each):
            Evaluation.objects.create(
                moment=Moment.CODE_SUBMIT,
                customer=customer,
                ip_prefix=prefix,
                code_result="code_invalid",
                code_failed=True,
                decision="allow",
            )


def test_a_step_up_at_a_code_request_is_not_undone_by_changing_device(phone):
    customer = established_customer()
    give_app(customer)
    case = open_failed_case(customer)
    mover = phone(facts=PIXEL_FACTS, address=HOME_ADDRESS)
    activate_with_sms(mover, customer, open_failed_case(customer))  # the known phone
    with time_machine.travel(timezone.now(), tick=False) as clock:
        clock.shift(3600)
        mover.sign_in(customer)
        mover.send(case)
        sms_code = last_sms_code(str(customer.phone_number))
        assert last_risk_event(case, Moment.CODE_REQUEST)["decision"] == "allow"

        # A new code asked for from a phone never proved on: more proof is needed.
        clock.shift(70)  # past the resend cooldown, well inside the code's five minutes
        stranger = phone(user_agent=IPHONE_UA, facts=IPHONE_FACTS, address=HOME_ADDRESS)
        stranger.sign_in(customer)
        stranger.send(case)
        request = last_risk_event(case, Moment.CODE_REQUEST)
        assert request["decision"] == "step_up"
        assert "new_device" in fired_kinds(request)
        assert sms_sent_to(customer) == 1

        # Back on the known phone the picture is clean, but this attempt still wants the app:
        # no SMS ...
        clock.shift(70)
        response = mover.send(case)
        assert last_risk_event(case, Moment.CODE_REQUEST)["decision"] == "allow"
        assert sms_sent_to(customer) == 1
        assert "authenticator app" in " ".join(messages_of(response))
        # ... and the SMS code from before the step-up is not enough either, even when a fresh
        # session no longer remembers that the app was asked for.
        clock.shift(10)
        mover.sign_in(customer)
        response = mover.verify(case, sms_code)
        case.refresh_from_db()
        assert case.state == CaseState.PENDING_VERIFICATION, "the SMS code alone was enough"
        assert response["Location"] == reverse("activation:retry", args=[case.pk])
        assert "authenticator app" in " ".join(messages_of(response))
        assert last_risk_event(case, Moment.CODE_SUBMIT)["decision"] == "allow"
        assert case.risk_level == "medium"

        mover.verify(case, app_code(customer))
        case.refresh_from_db()
        assert (case.state, case.risk_level) == (CaseState.SUBMITTING, "medium")


def test_network_facts_alone_never_ask_for_more_even_on_a_crowded_noisy_vpn(phone, vpn_list):
    # Sixteen other customers and their 32 wrong codes on the VPN range this hour (an attacker
    # can make that noise): the honest customer on her known phone is still only told nothing.
    crowd_the_vpn_range()
    customer = established_customer()
    mine = phone(facts=PIXEL_FACTS, address=HOME_ADDRESS)
    activate_with_sms(mine, customer, open_failed_case(customer))
    case = open_failed_case(customer)
    mine.sign_in(customer)
    mine.send(case)
    sms_code = last_sms_code(str(customer.phone_number))
    mine.move_to(VPN_ADDRESS)  # the code entered through the VPN
    mine.verify(case, sms_code)
    event = last_risk_event(case, Moment.CODE_SUBMIT)
    assert {"network_listed", "address_changed", "many_customers", "code_velocity"} <= (
        fired_kinds(event)
    )
    assert event["live"]["score"] >= 40  # enough to step up, were it not all network
    assert event["decision"] == "allow"
    case.refresh_from_db()
    assert (case.state, case.risk_level) == (CaseState.SUBMITTING, "low")


def test_a_ring_phone_that_drops_its_cookie_is_counted_by_its_look_which_never_decides_alone(
    phone,
):
    ring_phone = phone(facts=PIXEL_FACTS)
    customers = CustomerFactory.create_batch(6)  # accounts opened today
    events = []
    for customer in customers:
        ring_phone.client.cookies.pop(DEVICE_COOKIE, None)  # a fresh id for every account
        assert ring_phone.sign_in(customer).status_code == 302
        case = open_failed_case(customer)
        ring_phone.send(case)
        events.append(last_risk_event(case, Moment.CODE_REQUEST))
    # Each account on its own id, so the device's crowd is never more than one ...
    requests = Evaluation.objects.filter(moment=Moment.CODE_REQUEST)
    assert requests.values("device").distinct().count() == 6
    # ... but one look on one network: from the fourth account on, the look's crowd fires.
    looks = [
        {item["score"] for item in event["live"]["fired"] if item["params"].get("key") == "look"}
        for event in events
    ]
    assert looks == [set(), set(), set(), {40}, {40, 90}, {40, 90}]
    # It is counted per network, so it is a network fact: with nothing but a young account
    # beside it, it asks no one for more (a crowd of one popular phone on a carrier's network
    # must not hold the honest first-timers in it).
    assert {event["decision"] for event in events} == {"allow"}
