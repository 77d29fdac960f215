import re
from datetime import timedelta

import pytest
from django.urls import URLPattern, URLResolver, reverse
from django.utils import timezone

from activation.models import ActivationCase, ActorType, CaseEvent, CaseState, OverrideRequest
from activation.transitions import transition
from portal.backoffice import backoffice
from tests.factories import CustomerFactory, UserFactory, open_failed_case

from .test_backoffice import current_code, sign_in

pytestmark = pytest.mark.django_db
QUEUE = "/backoffice/activation/activationcase/"


def in_review(*, phone=None, sla_minutes_ago=None, reason="core_unavailable"):
    customer = CustomerFactory(**({"phone_number": phone} if phone else {}))
    case = open_failed_case(customer, reason=reason)
    transition(case, to=CaseState.NEEDS_REVIEW, actor_type=ActorType.SYSTEM, reason=reason)
    if sla_minutes_ago is not None:
        ActivationCase.objects.filter(pk=case.pk).update(
            sla_due_at=timezone.now() - timedelta(minutes=sla_minutes_ago)
        )
    return case


@pytest.fixture
def agent_client(client, agent):
    sign_in(client, agent, current_code(agent))
    return client


def row_ids(response) -> list[int]:
    return [
        int(i) for i in re.findall(r'<th class="field-id"><a href="[^"]+">(\d+)</a>', response.text)
    ]


def test_the_queue_puts_the_most_overdue_first_and_counts_every_state(agent_client):
    late = in_review(sla_minutes_ago=90)
    later = in_review(sla_minutes_ago=300)
    fresh = in_review()
    open_failed_case()  # failed, not in review
    page = agent_client.get(QUEUE + "?state__exact=needs_review")
    assert row_ids(page) == [later.pk, late.pk, fresh.pk]
    assert "Being reviewed by our staff: <strong>3</strong>" in page.text
    assert "Failed: <strong>1</strong>" in page.text


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_the_queue_names_states_in_the_readers_language_never_by_their_code(agent_client, language):
    in_review()
    page = agent_client.get(QUEUE, HTTP_ACCEPT_LANGUAGE=language)
    visible = re.sub(r"<[^>]+>", " ", page.text)  # what a reader sees, not link targets
    for state in CaseState:
        assert state.value not in visible, state.value
        assert state.name not in visible, state.name
    if language == "zh-hans":
        assert "工作人员审核中: <strong>1</strong>" in page.text
    assert f'href="?state__exact={CaseState.NEEDS_REVIEW.value}"' in page.text


@pytest.mark.parametrize("language", ["en", "zh-hans"])
def test_the_back_office_sign_in_labels_the_code_field_in_the_readers_language(client, language):
    page = client.get("/backoffice/login/", HTTP_ACCEPT_LANGUAGE=language)
    assert "OTP Token" not in page.text
    label = {"en": "Verification code", "zh-hans": "验证码"}[language]
    assert f'<label for="id_otp_token">{label}:</label>' in page.text


def test_filters_narrow_the_queue(agent_client, agent):
    breached = in_review(sla_minutes_ago=5)
    mine = in_review(reason="sync_timeout")
    agent_client.post(
        reverse("backoffice:activation_activationcase_act", args=[mine.pk, "assign_me"]),
        {"reason": "I know this customer"},
    )
    assert row_ids(agent_client.get(QUEUE + "?sla=breached")) == [breached.pk]
    assert row_ids(agent_client.get(QUEUE + "?assignee=mine")) == [mine.pk]
    assert row_ids(agent_client.get(QUEUE + "?assignee=none&state__exact=needs_review")) == [
        breached.pk
    ]
    assert row_ids(agent_client.get(QUEUE + "?failure_reason__exact=sync_timeout")) == [mine.pk]
    assert set(row_ids(agent_client.get(QUEUE + "?age=15m"))) == {breached.pk, mine.pk}
    assert row_ids(agent_client.get(QUEUE + "?age=older")) == []


def test_search_by_id_reference_phone_or_its_last_four_digits(agent_client):
    case = in_review(phone="+8613912345678")
    other = in_review(phone="+8613900001111")
    for term in (
        str(case.pk),
        case.credit_line.reference,
        "13912345678",
        "+86 139 1234 5678",
        "5678",
    ):
        assert row_ids(agent_client.get(QUEUE, {"q": term})) == [case.pk], term
    assert row_ids(agent_client.get(QUEUE, {"q": "1111"})) == [other.pk]


def test_phone_numbers_are_masked_in_the_queue(agent_client):
    in_review(phone="+8613912345678")
    page = agent_client.get(QUEUE)
    assert "139****5678" in page.text
    assert "13912345678" not in page.text


def test_the_case_page_shows_timeline_core_requests_and_notes(agent_client, agent):
    case = in_review()
    agent_client.post(
        reverse("backoffice:activation_activationcase_act", args=[case.pk, "note"]),
        {"text": "Customer called, core says pending"},
    )
    page = agent_client.get(f"{QUEUE}{case.pk}/change/")
    assert "Customer called, core says pending" in page.text
    assert "case.opened" in page.text
    assert "Core requests" in page.text
    assert "Request override" in page.text


def test_an_agent_requests_and_a_supervisor_approves_through_the_pages(client, agent, supervisor):
    case = in_review()
    act = "backoffice:activation_activationcase_act"
    sign_in(client, agent, current_code(agent))
    client.post(
        reverse(act, args=[case.pk, "request_override"]),
        {"kind": "mark_activated", "core_reference": "act_77", "reason": "core confirmed"},
    )
    override = OverrideRequest.objects.get()
    page = client.get(f"{QUEUE}{case.pk}/change/")
    assert 'value="Approve"' not in page.text  # the requester sees no approve button
    client.logout()
    sign_in(client, supervisor, current_code(supervisor))
    page = client.get(f"{QUEUE}{case.pk}/change/")
    assert 'value="Approve"' in page.text
    client.post(
        reverse(act, args=[case.pk, "approve_override"]),
        {"override_id": override.pk, "reason": "ok"},
    )
    case.refresh_from_db()
    assert case.state == CaseState.ACTIVATED


def test_an_auditor_sees_everything_and_changes_nothing(client, auditor):
    case = in_review()
    sign_in(client, auditor, current_code(auditor))
    assert client.get(QUEUE).status_code == 200
    page = client.get(f"{QUEUE}{case.pk}/change/")
    assert page.status_code == 200
    assert "Actions" not in page.text
    events = CaseEvent.objects.filter(case=case).count()
    for action in ("assign_me", "note", "resubmit", "return", "close", "request_override"):
        response = client.post(
            reverse("backoffice:activation_activationcase_act", args=[case.pk, action]),
            {"reason": "x", "text": "x", "reason_code": "duplicate", "kind": "mark_activated"},
        )
        assert response.status_code == 403, action
    assert client.post("/backoffice/core-submissions/", {"reason": "x"}).status_code == 403
    assert client.post("/backoffice/bulk-recovery/", {"reason": "x"}).status_code == 403
    assert CaseEvent.objects.filter(case=case).count() == events


def _all_backoffice_paths(case_id: int) -> list[str]:
    paths = []

    def walk(patterns, prefix):
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern):
                paths.append(route)

    walk(backoffice.get_urls(), "")
    concrete = []
    for route in paths:
        route = route.lstrip("^").rstrip("$")
        route = re.sub(r"<int:\w+>|<path:object_id>|\(\?P<\w+>[^)]*\)", str(case_id), route)
        route = re.sub(r"<str:action>", "note", route)
        route = re.sub(r"<\w+:\w+>|<\w+>", "x", route)
        concrete.append("/backoffice/" + route.replace("\\", ""))
    return concrete


def test_every_backoffice_url_needs_a_verified_device(client):
    case = in_review()
    staff = UserFactory(is_staff=True, is_superuser=True)  # every permission, but no OTP
    client.force_login(staff)
    paths = _all_backoffice_paths(case.pk)
    assert len(paths) > 40
    for url in paths:
        # The sign-in's passkey request checks the password itself (accounts/tests).
        if url.endswith(("login/", "logout/", "login/passkey-options/")) or "jsi18n" in url:
            continue
        for method in (client.get, client.post):
            response = method(url)
            assert response.status_code in (302, 404), (url, response.status_code)
            if response.status_code == 302:
                assert "/backoffice/login/" in response["Location"], url
    assert CaseEvent.objects.filter(case=case, kind="note.added").count() == 0
