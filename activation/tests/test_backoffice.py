import base64

import pyotp
import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice

from activation.models import ActorType, CaseState
from activation.transitions import transition
from tests.factories import PASSWORD, StaffFactory, UserFactory, open_failed_case

pytestmark = pytest.mark.django_db


def current_code(user) -> str:
    device = TOTPDevice.objects.get(user=user)
    return pyotp.TOTP(base64.b32encode(device.bin_key).decode()).now()


def sign_in(client, user, code: str):
    return client.post(
        "/backoffice/login/?next=/backoffice/",
        {"username": user.username, "password": PASSWORD, "otp_token": code},
        follow=True,
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
