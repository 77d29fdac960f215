"""Staff never use the customer portal: their password alone opens nothing there."""

import pytest

from tests.factories import PASSWORD, StaffFactory, open_failed_case

pytestmark = pytest.mark.django_db


def sign_in(client, username, password=PASSWORD):
    return client.post("/accounts/login/", {"username": username, "password": password})


def test_the_customer_sign_in_refuses_a_staff_account_and_points_to_the_back_office(client):
    staff = StaffFactory()
    response = sign_in(client, staff.username)
    assert response.status_code == 200
    assert "Staff sign in to the back office at /backoffice/login/" in response.text
    assert "_auth_user_id" not in client.session
    assert client.get("/accounts/profile/")["Location"].startswith("/accounts/login/")


def test_a_wrong_staff_password_gets_only_the_generic_message(client, customer):
    staff = StaffFactory()
    staff_response = sign_in(client, staff.username, "not-the-password")
    customer_response = sign_in(client, customer.username, "not-the-password")
    assert "back office" not in staff_response.text
    assert (
        staff_response.context["form"].non_field_errors()
        == customer_response.context["form"].non_field_errors()
    )


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_staff_session_is_sent_from_every_customer_page_to_the_back_office(client, method):
    case = open_failed_case()
    staff = StaffFactory()
    client.force_login(staff)
    for url in (
        "/activation/",
        f"/activation/{case.pk}/",
        f"/activation/{case.pk}/retry/",
        f"/activation/{case.pk}/status/",
        "/accounts/profile/",
    ):
        response = getattr(client, method)(url)
        assert response.status_code == 302, url
        assert response["Location"] == "/backoffice/", url
    case.refresh_from_db()
    assert case.events.count() == 1  # the retry page changed nothing


def test_a_customer_still_uses_the_customer_pages(client, customer):
    client.force_login(customer)
    assert client.get("/activation/").status_code == 200
    assert client.get("/accounts/profile/").status_code == 200
