"""Role changes made in the back office's user admin go on the system audit trail."""

import re

import pytest
from django.contrib.auth.models import Group, Permission

from activation.tests.test_backoffice import current_code, sign_in
from audit.models import SystemEvent
from audit.services import find_system_chain_break
from tests.factories import CustomerFactory, StaffFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    """A superuser signed in to the back office with password and authenticator."""
    superuser = StaffFactory(username="root-rita", is_superuser=True)
    sign_in(client, superuser, current_code(superuser))
    client.superuser = superuser
    return client


def change_form_data(client, user) -> dict:
    """What the user's change form posts when nothing is edited: every field as shown."""
    page = client.get(f"/backoffice/accounts/user/{user.pk}/change/").text
    data: dict = {}
    for tag in re.findall(r"<input[^>]*>", page):
        name = re.search(r'name="([^"]+)"', tag)
        if not name or name.group(1) == "csrfmiddlewaretoken":
            continue
        kind = re.search(r'type="([^"]+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        if kind and kind.group(1) == "checkbox":
            if "checked" in tag:
                data[name.group(1)] = "on"
        elif kind and kind.group(1) == "submit":
            continue
        else:
            data[name.group(1)] = value.group(1) if value else ""
    for select in ("groups", "user_permissions"):
        data[select] = [str(pk) for pk in getattr(user, select).values_list("pk", flat=True)]
    return data


def role_events():
    return SystemEvent.objects.filter(kind="staff.role_changed")


def test_making_a_customer_staff_in_a_role_goes_on_the_audit_trail_naming_who_did_it(
    admin_client,
):
    customer = CustomerFactory()
    supervisors = Group.objects.get(name="supervisor")
    export = Permission.objects.get(codename="export_case_history")
    data = change_form_data(admin_client, customer)
    data.update(
        is_staff="on",
        is_superuser="on",
        groups=[str(supervisors.pk)],
        user_permissions=[str(export.pk)],
    )
    before = SystemEvent.objects.count()
    response = admin_client.post(f"/backoffice/accounts/user/{customer.pk}/change/", data)
    assert response.status_code == 302, response.content[:2000]
    customer.refresh_from_db()
    assert customer.is_staff and customer.is_superuser
    event = role_events().get()
    assert event.actor == admin_client.superuser
    assert event.ip_address == "127.0.0.1"
    assert event.data == {
        "user_id": customer.pk,
        "username": customer.username,
        "created": False,
        "changes": {
            "is_staff": {"from": False, "to": True},
            "is_superuser": {"from": False, "to": True},
            "groups": {"added": ["supervisor"], "removed": []},
            "user_permissions": {"added": ["activation.export_case_history"], "removed": []},
        },
    }
    assert SystemEvent.objects.count() == before + 1
    assert find_system_chain_break() is None


def test_taking_a_role_away_is_recorded_too(admin_client, supervisor):
    data = change_form_data(admin_client, supervisor)
    data["groups"] = []
    data.pop("is_staff")
    admin_client.post(f"/backoffice/accounts/user/{supervisor.pk}/change/", data)
    assert not supervisor.groups.exists()
    assert role_events().get().data["changes"] == {
        "is_staff": {"from": True, "to": False},
        "groups": {"added": [], "removed": ["supervisor"]},
    }


def test_editing_only_a_name_records_no_role_change(admin_client, agent):
    data = change_form_data(admin_client, agent)
    data["first_name"] = "Ada"
    response = admin_client.post(f"/backoffice/accounts/user/{agent.pk}/change/", data)
    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.first_name == "Ada"
    assert not role_events().exists()


def test_a_password_set_for_a_staff_member_in_the_admin_goes_on_the_audit_trail(admin_client):
    agent = StaffFactory(username="agent-ann", role="agent")
    old_password = agent.password

    response = admin_client.post(
        f"/backoffice/accounts/user/{agent.pk}/password/",
        {"password1": "a new long passphrase 42", "password2": "a new long passphrase 42"},
    )

    assert response.status_code == 302
    agent.refresh_from_db()
    assert agent.password != old_password
    event = SystemEvent.objects.get(kind="account.password_set")
    assert event.actor == admin_client.superuser
    assert event.data == {"user_id": agent.pk, "username": "agent-ann", "is_staff": True}


def test_a_refused_password_in_the_admin_records_nothing(admin_client):
    agent = StaffFactory(username="agent-ann", role="agent")

    response = admin_client.post(
        f"/backoffice/accounts/user/{agent.pk}/password/",
        {"password1": "a new long passphrase 42", "password2": "something else"},
    )

    assert response.status_code == 200
    assert not SystemEvent.objects.filter(kind="account.password_set").exists()
