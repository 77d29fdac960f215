"""Staff backup codes: one sign-in each, made anew with the app's code, audited, staff only."""

import contextlib
import logging
import threading
from datetime import timedelta

import pytest
import time_machine
from django.core.management import call_command
from django.db import connections
from django.test import Client
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken

from accounts.models import User
from accounts.services import create_staff_user
from activation.models import CaseState
from activation.tests.test_backoffice import current_code, sign_in
from audit.models import SystemEvent
from portal.tests.test_backoffice import is_verified
from tests.factories import PASSWORD, StaffFactory, open_failed_case
from verification import backup_codes, factors
from verification.backup_codes import BACKUP_CODE_COUNT

pytestmark = pytest.mark.django_db

PAGE = "/backoffice/backup-codes/"
RESETS = "/backoffice/authenticator-resets/"


def later(seconds: int = 31):
    return time_machine.travel(timezone.now() + timedelta(seconds=seconds))


def give_codes(user) -> list[str]:
    return backup_codes.issue_initial_backup_codes(user=user)


def verified_client(user) -> Client:
    client = Client()
    sign_in(client, user, current_code(user))
    assert is_verified(client)
    return client


def events(kind: str) -> list[SystemEvent]:
    return list(SystemEvent.objects.filter(kind=kind).order_by("pk"))


def test_a_backup_code_opens_the_back_office_once_and_the_use_is_audited(agent, caplog):
    caplog.set_level(logging.DEBUG)
    codes = give_codes(agent)
    client = Client()

    sign_in(client, agent, codes[0])
    assert is_verified(client)
    [used] = events("staff.backup_code_used")
    assert used.data == {"user_id": agent.pk, "username": agent.username, "codes_left": 9}
    assert used.actor_id == agent.pk

    again = Client()
    response = sign_in(again, agent, codes[0], follow=False)
    assert response.status_code == 200  # the sign-in form again, with its error
    assert not is_verified(again)
    assert len(events("staff.backup_code_used")) == 1
    # The code itself is nowhere but in the member's hands: not in an event, not in a log.
    plain = codes[0].replace("-", "")
    for event in SystemEvent.objects.all():
        assert plain not in str(event.data) and codes[0] not in str(event.data)
    assert all(plain not in record.getMessage() for record in caplog.records)


def test_a_backup_code_is_accepted_as_typed_in_capitals_and_spaces(agent):
    codes = give_codes(agent)
    client = Client()
    sign_in(client, agent, " " + codes[3].upper().replace("-", " ") + " ")
    assert is_verified(client)


def test_another_staff_members_code_opens_nothing(agent, supervisor):
    theirs = give_codes(supervisor)
    give_codes(agent)
    client = Client()
    sign_in(client, agent, theirs[0])
    assert not is_verified(client)
    # Not used up on its owner either.
    assert StaticToken.objects.filter(device__user=supervisor).count() == BACKUP_CODE_COUNT
    assert not events("staff.backup_code_used")


def test_the_app_code_still_works_beside_backup_codes_and_spends_none(agent):
    give_codes(agent)
    verified_client(agent)
    assert backup_codes.backup_codes_left(agent) == BACKUP_CODE_COUNT


def test_a_wrong_backup_code_counts_against_the_codes_not_the_app(agent):
    give_codes(agent)
    client = Client()
    sign_in(client, agent, "zzzz-zzzz")
    assert not is_verified(client)
    assert StaticDevice.objects.get(user=agent).throttling_failure_count == 1
    # The app was not throttled by the backup-code guess: its code opens at once.
    verified_client(agent)


def test_new_codes_need_the_app_code_are_shown_once_and_replace_the_old_ones(agent):
    old = give_codes(agent)
    client = verified_client(agent)
    page = client.get(PAGE)
    assert page.status_code == 200
    assert "10 backup codes left" in page.text
    assert not any(code in page.text for code in old)

    # The sign-in just used this half-minute's app code; the app refuses it twice.
    with later():
        response = client.post(PAGE, {"action": "regenerate", "current_code": current_code(agent)})
        assert response.status_code == 200
        new = response.context["new_codes"]
        assert len(new) == BACKUP_CODE_COUNT and not set(new) & set(old)
        assert all(code in response.text for code in new)
        [event] = events("staff.backup_codes_regenerated")
        assert event.data == {"user_id": agent.pk, "username": agent.username, "codes_left": 10}
        assert not any(code.replace("-", "") in str(event.data) for code in new)

        # Shown once: the page again shows the count, no code.
        reloaded = client.get(PAGE)
        assert not any(code in reloaded.text for code in new)
        assert "10 backup codes left" in reloaded.text

        # The new code first: a wrong guess holds the next back a second (django-otp's throttle).
        for code, works in ((new[0], True), (old[0], False)):
            other = Client()
            sign_in(other, agent, code)
            assert is_verified(other) is works, code


def test_a_password_session_alone_or_a_wrong_app_code_makes_no_new_codes(agent):
    old = give_codes(agent)
    client = verified_client(agent)
    for data in ({"action": "regenerate"}, {"action": "regenerate", "current_code": "000000"}):
        response = client.post(PAGE, data)
        assert response.status_code == 400
        assert response.context["new_codes"] is None
    assert not events("staff.backup_codes_regenerated")
    assert sorted(
        backup_codes.display_code(token)
        for token in StaticToken.objects.filter(device__user=agent).values_list("token", flat=True)
    ) == sorted(old)


def test_a_backup_code_is_no_proof_for_making_new_codes(agent):
    codes = give_codes(agent)
    client = verified_client(agent)
    response = client.post(PAGE, {"action": "regenerate", "current_code": codes[0]})
    assert response.status_code == 400
    assert backup_codes.backup_codes_left(agent) == BACKUP_CODE_COUNT


def test_the_backup_codes_page_needs_the_second_factor(agent):
    give_codes(agent)
    client = Client()
    client.force_login(agent)  # a password sign-in, no factor verified
    response = client.post(PAGE, {"action": "regenerate", "current_code": current_code(agent)})
    assert response.status_code == 302
    assert "/backoffice/login/" in response["Location"]
    assert not events("staff.backup_codes_regenerated")


def test_supervisors_see_who_is_running_out_of_codes(supervisor, agent):
    give_codes(supervisor)
    codes = give_codes(agent)
    for code in codes[:8]:
        sign_in(Client(), agent, code)
    bare = StaffFactory(username="no-codes-nina", role="agent")

    page = verified_client(supervisor).get(RESETS)
    assert page.status_code == 200
    rows = {row.username: row for row in page.context["backup_codes_left"]}
    assert rows[agent.username].codes_left == 2 and rows[agent.username].running_out
    assert rows[supervisor.username].codes_left == 10
    assert not rows[supervisor.username].running_out
    assert rows[bare.username].codes_left == 0
    assert [row.username for row in page.context["backup_codes_left"]][:2] == [
        bare.username,
        agent.username,
    ]
    assert '<tr class="running-out">' in page.text
    # Agents do not see the list.
    assert verified_client(agent).get(RESETS).status_code == 403


def test_the_static_device_admin_reads_and_never_shows_a_code(agent):
    codes = give_codes(agent)
    superuser = StaffFactory(is_superuser=True)
    client = Client()
    sign_in(client, superuser, current_code(superuser))
    device = StaticDevice.objects.get(user=agent)
    listing = client.get("/backoffice/otp_static/staticdevice/")
    assert listing.status_code == 200
    page = client.get(f"/backoffice/otp_static/staticdevice/{device.pk}/change/")
    assert page.status_code == 200
    assert 'name="_save"' not in page.text
    for code in codes:
        assert code.replace("-", "") not in page.text
    assert client.post(f"/backoffice/otp_static/staticdevice/{device.pk}/delete/").status_code == (
        403
    )
    assert client.get("/backoffice/otp_static/staticdevice/add/").status_code == 403
    assert backup_codes.backup_codes_left(agent) == BACKUP_CODE_COUNT


def test_a_customer_page_never_takes_a_backup_code(customer):
    # No service gives a customer codes; even a device put there by hand opens nothing.
    with pytest.raises(backup_codes.NotStaff):
        backup_codes.issue_initial_backup_codes(user=customer)
    device = StaticDevice.objects.create(user=customer, name="stray", confirmed=True)
    StaticToken.objects.create(device=device, token="abcd2345")
    case = open_failed_case(customer)
    client = Client()
    client.force_login(customer)
    url = f"/activation/{case.pk}/retry/"
    client.post(url, {"action": "send", "channel": "sms"})
    response = client.post(
        url, {"action": "verify", "code": "abcd-2345", "submission_id": "0" * 32}
    )
    assert response.status_code in (200, 400)
    case.refresh_from_db()
    assert case.state != CaseState.SUBMITTING
    assert StaticToken.objects.filter(device=device).exists()
    # Nor does the back office open for a customer, code or not.
    sign_in(client, customer, "abcd2345")
    assert not is_verified(client)
    assert StaticToken.objects.filter(device=device).exists()


def test_an_approved_authenticator_reset_voids_the_backup_codes(
    supervisor, other_supervisor, agent
):
    codes = give_codes(agent)
    reset = factors.request_authenticator_reset(
        staff=supervisor, staff_member_id=agent.pk, reason="phone and wallet stolen"
    )
    factors.approve_authenticator_reset(reset_id=reset.pk, staff=other_supervisor)
    assert not StaticDevice.objects.filter(user=agent).exists()
    client = Client()
    response = sign_in(client, agent, codes[0])
    assert not is_verified(client)
    # With no factor left, the password leads to setting up the new app, as before.
    assert response.redirect_chain[-1][0] == "/backoffice/authenticator/enrol/"


def test_create_staff_user_prints_the_codes_once_and_they_work(capsys):
    call_command("create_staff_user", "new.agent", "--role", "agent", "--password", PASSWORD)
    out = capsys.readouterr().out
    printed = [line.strip() for line in out.splitlines() if line.startswith("  ")]
    assert len(printed) == BACKUP_CODE_COUNT
    [created] = events("staff.created")
    assert not any(code.replace("-", "") in str(created.data) for code in printed)
    staff = User.objects.get(username="new.agent")
    client = Client()
    sign_in(client, staff, printed[0])
    assert is_verified(client)


def test_create_staff_user_returns_the_codes(db):
    new = create_staff_user(username="new.sup", role="supervisor", password=PASSWORD)
    assert len(new.backup_codes) == BACKUP_CODE_COUNT
    assert backup_codes.backup_codes_left(new.user) == BACKUP_CODE_COUNT


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_code_used_twice_at_once_opens_one_session(agent, monkeypatch):
    codes = give_codes(agent)
    both_read = threading.Barrier(2)
    verify = StaticDevice.verify_token

    def wait_for_the_other_then_verify(self, token):
        # Both sign-ins wait here for each other before reading the code; with the device
        # locked the second one waits for the first to commit instead, and this wait times out.
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait(timeout=1)
        return verify(self, token)

    monkeypatch.setattr(StaticDevice, "verify_token", wait_for_the_other_then_verify)
    results: list[bool] = []
    errors: list[BaseException] = []

    def attempt() -> None:
        try:
            client = Client()
            sign_in(client, agent, codes[0], follow=False)
            results.append(is_verified(client))
        except Exception as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)

    assert errors == []
    assert sorted(results) == [False, True]
    assert len(events("staff.backup_code_used")) == 1
    assert backup_codes.backup_codes_left(agent) == BACKUP_CODE_COUNT - 1


def test_a_backup_code_session_changes_no_password_and_asks_for_no_reset(agent, supervisor):
    """Password plus a stolen printout must not lock the owner out."""
    codes = give_codes(agent)
    thief = Client()
    sign_in(thief, agent, codes[0])
    assert is_verified(thief)
    before = User.objects.get(pk=agent.pk).password
    response = thief.post(
        "/backoffice/password_change/",
        {
            "old_password": PASSWORD,
            "new_password1": "x-New-pass-9876",
            "new_password2": "x-New-pass-9876",
        },
    )
    assert response.status_code == 403
    assert User.objects.get(pk=agent.pk).password == before

    # A supervisor signed in with a backup code neither asks for nor decides a factor reset.
    sup_codes = give_codes(supervisor)
    boss = Client()
    sign_in(boss, supervisor, sup_codes[0])
    response = boss.post(
        "/backoffice/authenticator-resets/",
        {"action": "request", "staff_member": agent.pk, "reason": "lost phone"},
    )
    assert response.status_code == 403
    assert not factors.AuthenticatorReset.objects.exists()


def test_new_codes_end_a_session_that_signed_in_with_an_old_one(agent):
    old = give_codes(agent)
    thief = Client()
    sign_in(thief, agent, old[0])
    assert is_verified(thief)
    owner = verified_client(agent)
    with later():
        response = owner.post(PAGE, {"action": "regenerate", "current_code": current_code(agent)})
        assert response.status_code == 200 and response.context["new_codes"]
    assert not is_verified(thief)
    assert thief.get(PAGE).status_code == 302  # back to the sign-in
