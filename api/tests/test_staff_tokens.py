"""Staff API tokens: made on the back office's own page after an OTP-verified sign-in and a
fresh code from the app, shown once, kept only as a hash, scoped no wider than the role,
expiring, listed and revocable; each made or revoked token is on the audit trail."""

import hashlib
import re

import pytest
from django.test import Client
from rest_framework.test import APIClient

from activation.tests.test_backoffice import current_code, sign_in
from api.models import StaffToken
from api.staff import tokens
from audit.models import SystemEvent
from portal.errors import NotPermitted
from verification import backup_codes

pytestmark = pytest.mark.django_db

PAGE = "/backoffice/api-tokens/"
APP_STEP = 31  # an app's code is used once: the next one comes with the next 30-second step
TOKEN_SHAPE = re.compile(r"ars_[0-9a-f]{10}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def clock(time_machine):
    from django.utils import timezone

    time_machine.move_to(timezone.now(), tick=False)
    return time_machine


def verified_client(user) -> Client:
    client = Client()
    response = sign_in(client, user, current_code(user))
    assert response.status_code == 200
    return client


def events(kind: str) -> list[SystemEvent]:
    return list(SystemEvent.objects.filter(kind=kind).order_by("seq"))


def create(client: Client, staff, clock, **fields):
    clock.shift(APP_STEP)
    data = {
        "action": "create",
        "name": "CRM",
        "scopes": ["read", "work_cases"],
        "days": "30",
        "current_code": current_code(staff),
        **fields,
    }
    return client.post(PAGE, data)


def test_a_token_is_made_with_a_fresh_app_code_shown_once_and_only_its_hash_kept(agent, clock):
    client = verified_client(agent)
    response = create(client, agent, clock)
    assert response.status_code == 200
    plaintext = TOKEN_SHAPE.search(response.text).group(0)

    token = StaffToken.objects.get()
    assert (token.user, token.name, token.scopes) == (agent, "CRM", ["read", "work_cases"])
    assert token.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext.startswith(f"ars_{token.prefix}_")
    assert (token.expires_at - token.created_at).days == 30
    # Never stored, never on the trail.
    assert not StaffToken.objects.filter(key_hash__contains=plaintext[15:]).exists()
    (event,) = events("api_token.created")
    assert event.actor == agent
    assert plaintext[15:] not in str(event.data)
    assert event.data["prefix"] == token.prefix

    again = client.get(PAGE)
    assert again.status_code == 200
    assert plaintext not in again.text
    assert "CRM" in again.text

    answer = APIClient().get("/api/v1/staff/cases/", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert answer.status_code == 200


def test_the_tokens_page_needs_a_verified_back_office_session(client, agent):
    client.force_login(agent)  # password alone, no second factor
    assert client.get(PAGE).status_code == 302
    response = client.post(PAGE, {"action": "create", "name": "x", "scopes": ["read"]})
    assert response.status_code == 302
    assert response["Location"].startswith("/backoffice/login/")
    assert not StaffToken.objects.exists()


def test_without_a_fresh_app_code_no_token_is_made(agent, clock):
    client = verified_client(agent)
    # The code that signed in is used up: in the same 30 seconds it does not count again.
    fields = {"action": "create", "name": "x", "scopes": ["read"], "days": "3"}
    reused = client.post(PAGE, {**fields, "current_code": current_code(agent)})
    assert reused.status_code == 400
    assert create(client, agent, clock, current_code="000000").status_code == 400
    assert create(client, agent, clock, current_code="").status_code == 400
    assert not StaffToken.objects.exists()
    assert events("api_token.created") == []


def test_a_session_signed_in_with_a_backup_code_makes_no_token(agent, clock):
    codes = backup_codes.issue_initial_backup_codes(user=agent)
    client = Client()
    sign_in(client, agent, codes[0])
    assert create(client, agent, clock).status_code == 403
    assert not StaffToken.objects.exists()


def test_a_scope_beyond_the_role_is_refused(agent, auditor, clock):
    client = verified_client(agent)
    assert create(client, agent, clock, scopes=["export"]).status_code == 400
    with pytest.raises(NotPermitted):
        tokens.create_token(staff=agent, name="x", scopes=["export"])
    with pytest.raises(NotPermitted):
        tokens.create_token(staff=auditor, name="x", scopes=["read", "work_cases"])
    assert not StaffToken.objects.exists()
    assert tokens.allowed_scopes(auditor) == ["read", "export"]


@pytest.mark.parametrize("days", ["0", "91", "abc"])
def test_a_lifetime_outside_1_to_90_days_is_refused(agent, clock, days):
    client = verified_client(agent)
    assert create(client, agent, clock, days=days).status_code == 400
    assert not StaffToken.objects.exists()


def test_the_service_refuses_bad_names_scopes_and_lifetimes(agent):
    for kwargs in (
        {"name": " ", "scopes": ["read"]},
        {"name": "x" * 101, "scopes": ["read"]},
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["admin"]},
        {"name": "x", "scopes": ["read"], "days": 91},
    ):
        with pytest.raises(tokens.InvalidTokenRequest):
            tokens.create_token(staff=agent, **kwargs)
    assert not StaffToken.objects.exists()


def test_a_staff_member_revokes_their_own_token_and_it_stops_working(agent, supervisor, clock):
    token, plaintext = tokens.create_token(staff=agent, name="CRM", scopes=["read"])
    theirs, _theirs_plaintext = tokens.create_token(staff=supervisor, name="BI", scopes=["read"])
    client = verified_client(agent)

    # Another member's token is not one's own to revoke.
    client.post(PAGE, {"action": "revoke", "token_id": theirs.pk})
    theirs.refresh_from_db()
    assert theirs.revoked_at is None
    assert client.post(PAGE, {"action": "revoke", "token_id": "x"}).status_code == 400

    response = client.post(PAGE, {"action": "revoke", "token_id": token.pk})
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None and token.revoked_by == agent
    (event,) = events("api_token.revoked")
    assert event.actor == agent and event.data["token"] == token.pk
    page = client.get(PAGE)
    assert "revoked" in page.text

    answer = APIClient().get("/api/v1/staff/cases/", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert answer.status_code == 401
    assert answer.json()["code"] == "token_expired"


def test_the_tokens_page_lists_only_ones_own_tokens(agent, supervisor):
    tokens.create_token(staff=agent, name="Mine", scopes=["read"])
    tokens.create_token(staff=supervisor, name="Someone else's", scopes=["read"])
    page = verified_client(agent).get(PAGE)
    assert "Mine" in page.text
    assert "Someone else" not in page.text
