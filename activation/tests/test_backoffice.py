import base64
import uuid

import pyotp
import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice

from activation.models import (
    ActorType,
    CaseEvent,
    CaseState,
    CoreRequest,
    FailureReason,
    OverrideRequest,
)
from activation.transitions import transition
from risk.signals import pseudonym
from risk.tests.conftest import (
    IPHONE_FACTS,
    IPHONE_UA,
    OFFICE_ADDRESS,
    PIXEL_FACTS,
    established_customer,
    make_phone,
)
from tests.factories import PASSWORD, StaffFactory, UserFactory, open_failed_case, open_review_case
from tests.fixtures import last_sms_code

pytestmark = pytest.mark.django_db


def current_code(user) -> str:
    """The code the staff member's authenticator app shows now."""
    device = TOTPDevice.objects.get(user=user, confirmed=True)
    return pyotp.TOTP(base64.b32encode(device.bin_key).decode()).now()


def sign_in(client, user, code: str, *, follow: bool = True, **extra):
    """Post the back-office sign-in form: password and ``code`` (plus any ``extra`` field)."""
    return client.post(
        "/backoffice/login/?next=/backoffice/",
        {"username": user.username, "password": PASSWORD, "otp_token": code, **extra},
        follow=follow,
    )


@pytest.fixture
def case():
    case = open_failed_case()
    transition(case, to=CaseState.PENDING_VERIFICATION, actor_type=ActorType.CUSTOMER)
    return case


@pytest.fixture
def agent_with_view(agent):
    from django.contrib.auth.models import Permission

    agent.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="activation", codename__startswith="view_"
        )
    )
    return agent


def test_staff_sign_in_with_password_and_totp_and_see_the_case_and_its_timeline(
    client, agent_with_view, case
):
    response = sign_in(client, agent_with_view, current_code(agent_with_view))
    assert response.status_code == 200
    # The landing page is the work queue.
    assert response.redirect_chain[-1][0] == (
        "/backoffice/activation/activationcase/?state__exact=needs_review"
    )

    queue = client.get("/backoffice/activation/activationcase/?state__exact=pending_verification")
    assert queue.status_code == 200
    assert case.credit_line.reference in queue.text

    other_state = client.get("/backoffice/activation/activationcase/?state__exact=activated")
    assert case.credit_line.reference not in other_state.text

    page = client.get(f"/backoffice/activation/activationcase/{case.pk}/change/")
    assert page.status_code == 200
    assert "case.opened" in page.text
    assert "state.changed" in page.text
    assert "pending_verification" in page.text


def test_a_wrong_totp_code_keeps_staff_out(client, agent_with_view):
    code = current_code(agent_with_view)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    sign_in(client, agent_with_view, wrong)
    response = client.get("/backoffice/")
    assert response.status_code == 302
    assert response["Location"].startswith("/backoffice/login/")


def test_staff_without_a_device_cannot_reach_any_page(client, case):
    staff = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(staff)  # password alone, no verified device
    for url in (
        "/backoffice/",
        "/backoffice/activation/activationcase/",
        f"/backoffice/activation/activationcase/{case.pk}/change/",
    ):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/backoffice/login/")


def test_a_customer_cannot_enter_the_back_office(client, customer):
    client.force_login(customer)
    assert client.get("/backoffice/").status_code == 302


def test_the_timeline_cannot_be_edited_from_the_back_office(client, case, supervisor):
    sign_in(client, supervisor, current_code(supervisor))
    page = client.get(f"/backoffice/activation/activationcase/{case.pk}/change/")
    assert page.status_code == 200
    assert 'name="events-0-kind"' not in page.text
    assert (
        client.post(f"/backoffice/activation/activationcase/{case.pk}/delete/").status_code == 403
    )


def test_a_superuser_administers_staff_but_sees_no_cases_without_a_role(client, case):
    superuser = StaffFactory(is_superuser=True)
    sign_in(client, superuser, current_code(superuser))
    assert client.get("/backoffice/accounts/user/").status_code == 200
    assert client.get("/backoffice/activation/activationcase/").status_code == 403


# --- Bad input answers a clear 4xx or a form error, and changes nothing -------------------------

QUEUE = "/backoffice/activation/activationcase/"


@pytest.fixture
def review_case():
    return open_review_case(reason=FailureReason.RISK_REVIEW)


@pytest.fixture
def pending_override(review_case, agent):
    from activation.models import OverrideRequest
    from activation.services import staff as actions

    return actions.request_override(
        case_id=review_case.pk,
        staff=agent,
        kind=OverrideRequest.Kind.MARK_ACTIVATED,
        reason="The core says the line is active.",
        core_reference="ACT-1",
    )


def test_a_search_for_digits_python_counts_but_int_refuses_answers_the_queue(client, agent, case):
    sign_in(client, agent, current_code(agent))
    for term in ("²³⁴⁵", "²", "①②③④", "𐩀𐩁"):
        response = client.get(QUEUE, {"q": term})
        assert response.status_code == 200, term
    # Full-width digits from a Chinese keyboard find the case by its id.
    full_width = str(case.pk).translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    assert case.credit_line.reference in client.get(QUEUE, {"q": full_width}).text


def test_a_case_url_with_a_superscript_digit_says_the_case_does_not_exist(client, agent, case):
    from .helpers import business_state

    sign_in(client, agent, current_code(agent))
    before = business_state()
    response = client.get(f"{QUEUE}%C2%B2/change/")
    assert response.status_code == 302
    assert "doesn’t exist" in client.get(response["Location"], follow=True).text
    assert business_state() == before


def test_approving_override_abc_is_a_form_error_and_changes_nothing(
    client, supervisor, review_case, pending_override
):
    from .helpers import business_state

    sign_in(client, supervisor, current_code(supervisor))
    before = business_state()
    response = client.post(
        f"{QUEUE}{review_case.pk}/act/approve_override/",
        {"override_id": "abc", "reason": "Confirmed by phone."},
        follow=True,
    )
    assert response.status_code == 200
    assert "Enter a whole number." in response.text
    assert business_state() == before


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("action", "fields"),
    [
        ("note", {"text": "Called\x00 the customer."}),
        ("close", {"reason_code": "other", "reason": "Withdrawn\x00."}),
        ("assign_me", {"reason": "\x00"}),
        ("request_override", {"kind": "mark_activated", "reason": "ok", "core_reference": "A\x00"}),
    ],
    ids=["note", "close", "assign", "override-reference"],
)
def test_a_nul_character_in_what_staff_type_is_a_form_error_and_changes_nothing(
    client, supervisor, review_case, action, fields
):
    from .helpers import business_state

    sign_in(client, supervisor, current_code(supervisor))
    before = business_state()
    response = client.post(f"{QUEUE}{review_case.pk}/act/{action}/", fields, follow=True)
    assert response.status_code == 200
    assert "Null characters are not allowed." in response.text
    assert business_state() == before


def test_an_over_long_core_reference_is_a_form_error(client, supervisor, review_case):
    from .helpers import business_state

    sign_in(client, supervisor, current_code(supervisor))
    before = business_state()
    response = client.post(
        f"{QUEUE}{review_case.pk}/act/request_override/",
        {"kind": "mark_activated", "reason": "ok", "core_reference": "A" * 101},
        follow=True,
    )
    assert "Ensure this value has at most 100 characters" in response.text
    assert business_state() == before


@pytest.mark.parametrize("page", ["config", "qrcode"])
def test_the_authenticator_admin_pages_answer_404_for_a_device_that_does_not_exist(client, page):
    superuser = StaffFactory(is_superuser=True)
    sign_in(client, superuser, current_code(superuser))
    response = client.get(f"/backoffice/otp_totp/totpdevice/987654/{page}/")
    assert response.status_code == 404


BACKOFFICE_PAGES = [
    "/backoffice/",
    "/backoffice/login/",
    QUEUE,
    "/backoffice/exports/",
    "/backoffice/core-submissions/",
    "/backoffice/no-such-page/",
]


@pytest.mark.parametrize("method", ["put", "delete", "trace", "patch"])
def test_back_office_pages_answer_405_to_methods_other_than_get_head_and_post(
    client, supervisor, review_case, method
):
    from .helpers import business_state

    sign_in(client, supervisor, current_code(supervisor))
    before = business_state()
    for url in [*BACKOFFICE_PAGES, f"{QUEUE}{review_case.pk}/change/"]:
        response = getattr(client, method)(url)
        assert response.status_code == 405, url
        assert response["Allow"] == "GET, HEAD, POST"
    assert business_state() == before
    assert client.get(QUEUE).status_code == 200  # the session is still good


@pytest.mark.postgres
@pytest.mark.parametrize(
    "query",
    ["q=%00", "state__exact=%00", "failure_reason__exact=a%00b", "o=%00", "%00=1"],
)
def test_a_nul_character_in_a_back_office_query_string_is_a_400(client, supervisor, query):
    sign_in(client, supervisor, current_code(supervisor))
    assert client.get(f"{QUEUE}?{query}").status_code == 400
    assert client.get(f"/backoffice/activation/creditline/?{query}").status_code == 400


# --- What staff without view_pii see of a customer -----------------------------------------------


@pytest.fixture
def case_worked_from_two_addresses(client, django_capture_on_commit_callbacks):
    """A customer who asked for a code from one address and entered it from another."""
    import uuid

    from tests.factories import CustomerFactory
    from tests.fixtures import last_sms_code

    customer = CustomerFactory(username="zhang.wei.1988")
    case = open_failed_case(customer)
    client.force_login(customer)
    retry = f"/activation/{case.pk}/retry/"
    client.post(retry, {"action": "send", "channel": "sms"}, REMOTE_ADDR="10.1.2.3")
    with django_capture_on_commit_callbacks(execute=False):
        client.post(
            retry,
            {"action": "verify", "code": last_sms_code(), "submission_id": str(uuid.uuid4())},
            REMOTE_ADDR="2001:db8:85a3::8a2e:370:7334",
        )
    client.logout()
    return case


def staff_pages(client, case) -> str:
    """The case page and the credit-line pages it links to, as one text, HTML entities read."""
    import html

    line = case.credit_line
    pages = [
        client.get(f"/backoffice/activation/activationcase/{case.pk}/change/"),
        client.get("/backoffice/activation/creditline/"),
        client.get(f"/backoffice/activation/creditline/{line.pk}/change/"),
    ]
    assert [page.status_code for page in pages] == [200, 200, 200]
    return html.unescape("\n".join(page.text for page in pages))


@pytest.mark.parametrize("role", ["agent", "auditor", "supervisor"])
def test_without_view_pii_the_case_page_masks_the_customer_username_and_addresses(
    client, case_worked_from_two_addresses, role, request
):
    staff = request.getfixturevalue(role)
    sign_in(client, staff, current_code(staff))
    text = staff_pages(client, case_worked_from_two_addresses)
    assert "zhang.wei.1988" not in text
    assert "10.1.2.3" not in text
    assert "2001:db8:85a3" not in text
    assert "z***" in text  # the customer, as actor and as the case's customer
    assert "10.1.*.*" in text  # the timeline's address column
    # Where the code was asked for and where it was entered, in the event's data.
    assert '"from": "10.1.*.*"' in text
    assert '"to": "2001:db8:*"' in text
    assert "verification.succeeded" in text  # the timeline itself is all there


def test_with_view_pii_the_case_page_shows_the_customer_whole(
    client, case_worked_from_two_addresses, agent
):
    from django.contrib.auth.models import Permission

    agent.user_permissions.add(Permission.objects.get(codename="view_pii"))
    sign_in(client, agent, current_code(agent))
    text = staff_pages(client, case_worked_from_two_addresses)
    assert "zhang.wei.1988" in text
    assert "10.1.2.3" in text
    assert "2001:db8:85a3::8a2e:370:7334" in text


def case_device_id(case) -> str:
    """The device id the customer's phone carried, as the timeline records it."""
    device_ids = set(
        CaseEvent.objects.filter(case=case)
        .exclude(device_id="")
        .values_list("device_id", flat=True)
    )
    assert len(device_ids) == 1, "the customer used one phone"
    return device_ids.pop()


@pytest.mark.parametrize("role", ["agent", "auditor", "supervisor"])
def test_without_view_pii_the_timeline_shows_the_device_by_the_risk_panels_hash(
    client, case_worked_from_two_addresses, role, request
):
    case = case_worked_from_two_addresses
    device_id = case_device_id(case)
    staff = request.getfixturevalue(role)
    sign_in(client, staff, current_code(staff))
    text = staff_pages(client, case)
    assert device_id not in text
    assert f"#{pseudonym(device_id)}" in text


def test_with_view_pii_the_timeline_shows_the_device_id(
    client, case_worked_from_two_addresses, agent
):
    from django.contrib.auth.models import Permission

    agent.user_permissions.add(Permission.objects.get(codename="view_pii"))
    sign_in(client, agent, current_code(agent))
    assert case_device_id(case_worked_from_two_addresses) in staff_pages(
        client, case_worked_from_two_addresses
    )


def test_a_case_the_checkpoint_held_after_a_right_code_is_resubmitted_only_with_four_eyes(
    client, agent, supervisor
):
    """The SMS code was right but came from a phone the customer never used (whoever talked
    them out of it): the checkpoint held the case, and one agent alone cannot send it on."""
    customer = established_customer()
    own_phone = make_phone(facts=PIXEL_FACTS)
    own_phone.sign_in(customer)
    earlier = open_failed_case(customer)
    own_phone.send(earlier)
    own_phone.verify(earlier, last_sms_code(str(customer.phone_number)))  # a phone they use

    case = open_failed_case(customer)
    own_phone.send(case)
    other_phone = make_phone(user_agent=IPHONE_UA, facts=IPHONE_FACTS, address=OFFICE_ADDRESS)
    other_phone.sign_in(customer)
    other_phone.post(
        f"/activation/{case.pk}/retry/",
        {
            "action": "verify",
            "code": last_sms_code(str(customer.phone_number)),
            "submission_id": str(uuid.uuid4()),
        },
    )
    case.refresh_from_db()
    assert (case.state, case.failure_reason) == (CaseState.NEEDS_REVIEW, FailureReason.RISK_REVIEW)
    assert CaseEvent.objects.filter(case=case, kind="verification.succeeded").exists()

    sign_in(client, agent, current_code(agent))
    response = client.post(
        f"{QUEUE}{case.pk}/act/resubmit/", {"reason": "The code was right."}, follow=True
    )
    assert "The risk checkpoint held this case" in response.text
    case.refresh_from_db()
    assert case.state == CaseState.NEEDS_REVIEW
    assert not CoreRequest.objects.filter(case=case).exists()

    client.post(
        f"{QUEUE}{case.pk}/act/request_override/",
        {"kind": OverrideRequest.Kind.RESUBMIT_UNVERIFIED, "reason": "Customer came to a branch."},
    )
    override = OverrideRequest.objects.get(case=case)
    client.logout()
    sign_in(client, supervisor, current_code(supervisor))
    client.post(
        f"{QUEUE}{case.pk}/act/approve_override/",
        {"override_id": override.pk, "reason": "Saw the ID check."},
    )
    case.refresh_from_db()
    assert case.state == CaseState.SUBMITTING
    request = CoreRequest.objects.get(case=case)
    assert request.payload["verification"]["method"] == "staff_override"
