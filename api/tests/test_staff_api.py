"""The staff API through the real stack: staff tokens only, scopes and roles, the queue with its
filters and cursor, a case masked as the back office masks it, the actions through the same
services (four eyes, the timeline as the person), exports streamed with their manifest."""

import hashlib
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from activation.models import CaseEvent, CaseExport, CaseState, FailureReason, OverrideRequest
from api.models import AppSession, StaffToken
from api.staff import tokens
from audit.models import SystemEvent
from tests.factories import open_failed_case, open_review_case

pytestmark = pytest.mark.django_db

CASES = "/api/v1/staff/cases/"
EXPORTS = "/api/v1/staff/exports/"


def client_for(staff, scopes=("read", "work_cases")) -> APIClient:
    _token, plaintext = tokens.create_token(staff=staff, name="tool", scopes=list(scopes))
    return bearer(plaintext)


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"code", "message", "details"}
    if code is not None:
        assert body["code"] == code
    return body


def act(client: APIClient, case_id, action: str, **data):
    return client.post(f"{CASES}{case_id}/actions/{action}/", data, format="json")


# --- Who may call ----------------------------------------------------------------------------


def test_wrong_expired_and_revoked_tokens_are_401_with_the_envelope(agent):
    token, plaintext = tokens.create_token(staff=agent, name="t", scopes=["read"])
    assert bearer(plaintext).get(CASES).status_code == 200
    assert_error(bearer(plaintext[:-1] + "x").get(CASES), 401)
    assert_error(bearer("ars_nothing_here").get(CASES), 401)
    assert_error(APIClient().get(CASES), 401, "not_authenticated")

    StaffToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_error(bearer(plaintext).get(CASES), 401, "token_expired")

    other, other_plaintext = tokens.create_token(staff=agent, name="u", scopes=["read"])
    tokens.revoke_token(token_id=other.pk, by=agent)
    assert_error(bearer(other_plaintext).get(CASES), 401, "token_expired")


def test_a_password_change_ends_the_tokens_made_before_it(agent, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    client = client_for(agent)
    assert client.get(CASES).status_code == 200
    time_machine.shift(1)
    agent.set_password("a-brand-new-passphrase")
    agent.save()
    assert_error(client.get(CASES), 401, "token_expired")
    time_machine.shift(1)
    assert client_for(agent).get(CASES).status_code == 200


def test_an_approved_authenticator_reset_revokes_the_members_tokens(
    agent, supervisor, other_supervisor
):
    from verification import factors

    client = client_for(agent)
    assert client.get(CASES).status_code == 200
    reset = factors.request_authenticator_reset(
        staff=supervisor, staff_member_id=agent.pk, reason="phone and laptop stolen"
    )
    assert client.get(CASES).status_code == 200  # asked for, not yet approved
    factors.approve_authenticator_reset(reset_id=reset.pk, staff=other_supervisor)
    assert_error(client.get(CASES), 401, "token_expired")
    assert StaffToken.objects.get(user=agent).revoked_by == other_supervisor


def test_a_token_of_someone_no_longer_staff_is_401(agent):
    client = client_for(agent)
    agent.is_staff = False
    agent.save(update_fields=["is_staff"])
    assert_error(client.get(CASES), 401)


def test_a_session_cookie_does_not_open_the_staff_api(client, agent):
    client.force_login(agent)
    assert client.get(CASES).status_code == 401


def test_a_customers_app_token_cannot_use_staff_endpoints(customer):
    session = AppSession.objects.create(
        user=customer, installation_id="inst-1", platform="ios", refresh_jti="jti"
    )
    access = AccessToken.for_user(customer)
    access["sid"] = session.pk
    client = bearer(str(access))
    assert_error(client.get(CASES), 403, "staff_token_required")
    case = open_failed_case(customer)
    assert_error(act(client, case.pk, "note", text="hi"), 403, "staff_token_required")
    assert not CaseEvent.objects.filter(kind="note.added").exists()


def test_a_missing_scope_is_403(agent):
    case = open_review_case()
    read_only = client_for(agent, scopes=["read"])
    assert_error(act(read_only, case.pk, "note", text="hi"), 403, "scope_missing")
    work_only = client_for(agent, scopes=["work_cases"])
    assert_error(work_only.get(CASES), 403, "scope_missing")
    assert_error(work_only.post(EXPORTS, {}, format="json"), 403, "scope_missing")
    assert not CaseEvent.objects.filter(kind="note.added").exists()


def test_a_role_taken_away_is_403_even_with_the_scope(agent, supervisor):
    case = open_review_case()
    client = client_for(agent)
    exporter = client_for(supervisor, scopes=["read", "export"])
    agent.groups.clear()
    supervisor.groups.clear()
    assert_error(act(client, case.pk, "note", text="hi"), 403, "not_permitted")
    assert_error(client.get(CASES), 403, "not_permitted")
    assert_error(exporter.post(EXPORTS, {}, format="json"), 403, "not_permitted")
    assert not CaseEvent.objects.filter(kind="note.added").exists()
    assert not CaseExport.objects.exists()


def test_an_agent_may_not_approve_overrides_and_a_supervisor_not_their_own(
    agent, supervisor, other_supervisor
):
    case = open_review_case(reason=FailureReason.RISK_REVIEW)
    asked = act(
        client_for(supervisor),
        case.pk,
        "request_override",
        kind="mark_activated",
        reason="The core says it is active.",
        core_reference="ACT-9",
    )
    assert asked.status_code == 200, asked.content
    override = OverrideRequest.objects.get()
    assert_error(
        act(client_for(agent), case.pk, "approve_override", override_id=override.pk, reason="ok"),
        403,
        "not_permitted",
    )
    own = act(
        client_for(supervisor), case.pk, "approve_override", override_id=override.pk, reason="ok"
    )
    assert_error(own, 403, "not_permitted")
    override.refresh_from_db()
    assert override.status == OverrideRequest.Status.PENDING

    approved = act(
        client_for(other_supervisor),
        case.pk,
        "approve_override",
        override_id=override.pk,
        reason="Checked with the core.",
    )
    assert approved.status_code == 200, approved.content
    assert approved.json()["case"]["state"] == CaseState.ACTIVATED
    case.refresh_from_db()
    assert case.state == CaseState.ACTIVATED
    approval = CaseEvent.objects.get(case=case, kind="override.approved")
    assert approval.actor == other_supervisor and approval.actor_type == "staff"


# --- Actions ---------------------------------------------------------------------------------


def test_actions_go_on_the_timeline_as_the_person_with_their_address(agent):
    case = open_review_case()
    client = client_for(agent)
    before = CaseEvent.objects.filter(case=case).count()
    response = client.post(
        f"{CASES}{case.pk}/actions/note/",
        {"text": "Called the customer."},
        format="json",
        REMOTE_ADDR="198.51.100.7",
        HTTP_USER_AGENT="crm/1.0",
    )
    assert response.status_code == 200, response.content
    assert response.json()["message"]
    note = CaseEvent.objects.get(case=case, kind="note.added")
    assert (note.actor, note.actor_type, note.data) == (
        agent,
        "staff",
        {"text": "Called the customer."},
    )
    assert note.ip_address == "198.51.100.7" and note.user_agent == "crm/1.0"
    assert CaseEvent.objects.filter(case=case).count() == before + 1

    assigned = act(client, case.pk, "assign_me", reason="mine now")
    assert assigned.status_code == 200
    assert assigned.json()["case"]["assignee"] == {"id": agent.pk, "username": agent.username}
    closed = act(client, case.pk, "close", reason_code="duplicate", reason="Opened twice.")
    assert closed.status_code == 200
    assert closed.json()["case"]["state"] == CaseState.CLOSED
    assert CaseEvent.objects.get(case=case, state_after=CaseState.CLOSED).actor == agent


def test_a_refused_action_is_a_4xx_with_the_services_code_and_changes_nothing(agent):
    case = open_failed_case()
    client = client_for(agent)
    before = CaseEvent.objects.filter(case=case).count()
    assert_error(act(client, case.pk, "note", text=""), 400, "reason_required")
    assert_error(
        act(client, case.pk, "close", reason_code="nope", reason="x"), 400, "reason_required"
    )
    assert_error(act(client, case.pk, "resubmit", reason="x"), 409, "transition_not_allowed")
    assert CaseEvent.objects.filter(case=case).count() == before


@pytest.mark.parametrize(
    ("path", "data", "status"),
    [
        ("{id}/actions/dance/", {}, 404),
        ("abc/actions/note/", {"text": "x"}, 404),
        ("²/actions/note/", {"text": "x"}, 404),
        ("99999999999999999999/actions/note/", {"text": "x"}, 404),
        ("123456789/actions/note/", {"text": "x"}, 404),
        ("{id}/actions/note/", {"text": "x" * 2001}, 400),
        ("{id}/actions/note/", {"text": "a\x00b"}, 400),
        ("{id}/actions/approve_override/", {"override_id": "abc", "reason": "x"}, 400),
        ("{id}/actions/approve_override/", {"override_id": 2**63, "reason": "x"}, 400),
        ("{id}/actions/approve_override/", {"override_id": 987654, "reason": "x"}, 404),
        ("{id}/actions/request_override/", {"kind": "magic", "reason": "x"}, 400),
    ],
)
def test_bad_action_input_is_a_4xx_never_a_500(supervisor, path, data, status):
    case = open_review_case()
    client = client_for(supervisor)
    before = CaseEvent.objects.count()
    response = client.post(CASES + path.format(id=case.pk), data, format="json")
    assert_error(response, status)
    assert CaseEvent.objects.count() == before


# --- The queue and a case --------------------------------------------------------------------


def test_the_queue_filters_by_state_reason_assignee_and_search(agent):
    review = open_review_case()
    failed = open_failed_case(reason=FailureReason.CODE_INVALID)
    client = client_for(agent)
    act(client, review.pk, "assign_me", reason="mine")

    def ids(**query) -> list[int]:
        response = client.get(CASES, query)
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    assert set(ids()) == {review.pk, failed.pk}
    assert ids(state="needs_review") == [review.pk]
    assert ids(failure_reason="code_invalid") == [failed.pk]
    assert ids(assignee="me") == [review.pk]
    assert ids(assignee="none") == [failed.pk]
    assert ids(assignee=str(agent.pk)) == [review.pk]
    assert ids(q=failed.credit_line.reference) == [failed.pk]
    assert ids(q=str(review.pk)) == [review.pk]


@pytest.mark.parametrize(
    "query",
    [
        {"state": "bogus"},
        {"failure_reason": "x"},
        {"assignee": "someone"},
        {"assignee": "99999999999999999999"},
        {"q": "1" * 5000},
        {"page_size": "abc"},
    ],
)
def test_bad_queue_filters_are_a_400(agent, query):
    open_review_case()
    response = client_for(agent).get(CASES, query)
    if "page_size" in query:  # DRF falls back to the default size for a size it cannot read
        assert response.status_code == 200
    else:
        assert_error(response, 400, "invalid")


def test_a_bad_cursor_is_a_404_with_the_envelope(agent):
    assert_error(client_for(agent).get(CASES, {"cursor": "garbage"}), 404)


def test_the_cursor_walks_the_queue_in_the_back_offices_order_without_repeats(agent):
    cases = [open_failed_case() for _ in range(5)]
    due = timezone.now()
    # Two with an SLA (the later one second), three without (oldest first, then by id).
    type(cases[0]).objects.filter(pk=cases[3].pk).update(sla_due_at=due)
    type(cases[0]).objects.filter(pk=cases[1].pk).update(sla_due_at=due + timedelta(minutes=5))
    expected = [cases[3].pk, cases[1].pk, cases[0].pk, cases[2].pk, cases[4].pk]
    client = client_for(agent)
    seen, url = [], f"{CASES}?page_size=2"
    while url:
        page = client.get(url)
        assert page.status_code == 200
        body = page.json()
        seen += [row["id"] for row in body["results"]]
        url = body["next"]
        if len(seen) == 2:
            open_failed_case()  # a case arriving mid-walk (no SLA, newest) comes last
    assert seen[:5] == expected
    assert len(seen) == len(set(seen)) == 6


def test_a_case_shows_its_timeline_and_core_requests_masked_without_view_pii(agent, supervisor):
    case = open_review_case()
    client_for(agent).post(
        f"{CASES}{case.pk}/actions/note/", {"text": "n"}, format="json", REMOTE_ADDR="203.0.113.7"
    )
    body = client_for(agent).get(f"{CASES}{case.pk}/").json()
    username = case.credit_line.customer.username
    assert body["id"] == case.pk and body["state"] == "needs_review"
    assert body["customer"] == f"{username[0]}***"
    assert username not in json.dumps(body)
    assert [event["seq"] for event in body["timeline"]] == list(range(1, len(body["timeline"]) + 1))
    note = body["timeline"][-1]
    assert note["kind"] == "note.added" and note["actor"] == agent.username
    assert note["ip_address"] == "203.0.*.*"
    assert isinstance(body["core_requests"], list)
    assert "****" in body["customer_phone"] or body["customer_phone"] == ""

    supervisor.user_permissions.add(Permission.objects.get(codename="view_pii"))
    whole = client_for(supervisor).get(f"{CASES}{case.pk}/").json()
    assert whole["customer"] == username
    assert whole["timeline"][-1]["ip_address"] == "203.0.113.7"


@pytest.mark.parametrize("case_id", ["abc", "²", "0", "99999999999999999999", "1.5"])
def test_an_id_that_is_no_case_is_a_404_with_the_envelope(agent, case_id):
    assert_error(client_for(agent).get(f"{CASES}{case_id}/"), 404)


# --- Exports ---------------------------------------------------------------------------------


def start(client, **filters):
    response = client.post(EXPORTS, filters, format="json")
    assert response.status_code == 201, response.content
    return response.json()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_an_export_is_streamed_and_its_manifest_matches_the_bytes(auditor, fmt):
    case = open_review_case()
    client = client_for(auditor, scopes=["read", "export"])
    export = start(client, states=["needs_review"], format=fmt)
    assert export["pii"] is False and export["filters"]["states"] == ["needs_review"]

    assert_error(client.get(export["manifest_url"]), 404)  # not downloaded yet
    download = client.get(export["download_url"])
    assert download.status_code == 200
    assert download.streaming
    content = b"".join(download.streaming_content)
    assert download["Content-Type"].startswith("text/csv" if fmt == "csv" else "application/jsonl")
    assert case.credit_line.customer.username.encode() not in content

    manifest = client.get(export["manifest_url"])
    assert manifest.status_code == 200
    body = manifest.json()
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["rows"] == CaseEvent.objects.filter(case=case).count()
    assert body["exported_by"] == auditor.username
    assert body["chain_heads"][str(case.pk)]["seq"] == body["rows"]
    (event,) = SystemEvent.objects.filter(kind="export.created")
    assert event.actor == auditor and event.data["sha256"] == body["sha256"]


def test_a_download_repeated_later_gives_the_same_bytes(auditor, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    open_review_case()
    client = client_for(auditor, scopes=["export"])
    export = start(client)
    first = b"".join(client.get(export["download_url"]).streaming_content)
    time_machine.shift(5)
    open_review_case()  # the trail grows after the export was started
    again = b"".join(client.get(export["download_url"]).streaming_content)
    assert again == first
    assert client.get(export["manifest_url"]).json()["sha256"] == hashlib.sha256(first).hexdigest()


def test_an_export_is_downloaded_in_the_format_asked_for(auditor):
    open_review_case()
    client = client_for(auditor, scopes=["export"])
    export = start(client)
    jsonl = client.get(export["download_url"], {"format": "jsonl"})
    lines = b"".join(jsonl.streaming_content).decode().splitlines()
    assert lines and all(json.loads(line)["case_id"] for line in lines)
    assert_error(client.get(export["download_url"], {"format": "xlsx"}), 400)


def test_exports_need_the_export_scope_and_role_and_are_the_starters_own(
    auditor, supervisor, agent
):
    open_review_case()
    assert_error(client_for(auditor, scopes=["read"]).post(EXPORTS, {}, format="json"), 403)
    with pytest.raises(tokens.NotPermitted):
        tokens.create_token(staff=agent, name="x", scopes=["export"])
    export = start(client_for(auditor, scopes=["export"]))
    other = client_for(supervisor, scopes=["export"])
    assert_error(other.get(export["download_url"]), 404)
    assert not CaseExport.objects.filter(completed_at__isnull=False).exists()


@pytest.mark.parametrize(
    "filters",
    [
        {"states": ["bogus"]},
        {"reasons": "code_invalid"},
        {"since": "yesterday"},
        {"since": "2025-01-02T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
        {"format": "xlsx"},
    ],
)
def test_bad_export_filters_are_a_400(auditor, filters):
    client = client_for(auditor, scopes=["export"])
    assert_error(client.post(EXPORTS, filters, format="json"), 400, "invalid")
    assert not CaseExport.objects.exists()
