"""The queue and the case page cost a fixed number of queries, however much data there is."""

import hashlib
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from activation.admin import ActivationCaseAdmin
from activation.models import ActivationCase, ActorType, CaseEvent, CaseState, CreditLine
from tests.factories import CustomerFactory

from .test_backoffice import current_code, sign_in

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

CASES, EVENTS_PER_CASE = 10_000, 20
QUEUE = "/backoffice/activation/activationcase/"


def events_for(case_id: int, count: int, now) -> list[CaseEvent]:
    return [
        CaseEvent(
            case_id=case_id,
            seq=seq,
            kind="note.added",
            actor_type=ActorType.SYSTEM,
            data={"text": f"event {seq}"},
            created_at=now,
            prev_hash="0" * 64,
            hash=hashlib.sha256(f"{case_id}:{seq}".encode()).hexdigest(),
        )
        for seq in range(1, count + 1)
    ]


@pytest.fixture
def many_cases():
    customers = [CustomerFactory() for _ in range(20)]
    now = timezone.now()
    lines = CreditLine.objects.bulk_create(
        CreditLine(
            customer=customers[n % 20],
            reference=f"QB-{n:06d}",
            product_name="Installment Plus",
            credit_limit=Decimal(1000),
        )
        for n in range(CASES)
    )
    cases = ActivationCase.objects.bulk_create(
        ActivationCase(
            credit_line=line, state=CaseState.NEEDS_REVIEW, failure_reason="sync_timeout"
        )
        for line in lines
    )
    batch: list[CaseEvent] = []
    for case in cases:
        batch.extend(events_for(case.pk, EVENTS_PER_CASE, now))
        if len(batch) >= 20_000:
            CaseEvent.objects.bulk_create(batch)
            batch = []
    CaseEvent.objects.bulk_create(batch)
    return cases


def queries(client, url: str) -> int:
    client.get(url)  # warm per-process caches (content types, permissions) first
    with CaptureQueriesContext(connection) as context:
        response = client.get(url)
    assert response.status_code == 200
    return len(context.captured_queries)


def test_the_queue_and_the_case_page_cost_the_same_whatever_the_size(
    client, agent, many_cases, monkeypatch
):
    assert CaseEvent.objects.count() == CASES * EVENTS_PER_CASE
    sign_in(client, agent, current_code(agent))

    monkeypatch.setattr(ActivationCaseAdmin, "list_per_page", 20)
    small_page = queries(client, QUEUE + "?state__exact=needs_review")
    monkeypatch.setattr(ActivationCaseAdmin, "list_per_page", 200)
    large_page = queries(client, QUEUE + "?state__exact=needs_review")
    assert small_page == large_page
    assert large_page <= 15

    few = many_cases[0]
    many = many_cases[1]
    CaseEvent.objects.bulk_create(events_for(many.pk, 200, timezone.now())[EVENTS_PER_CASE:])
    assert queries(client, f"{QUEUE}{few.pk}/change/") == queries(
        client, f"{QUEUE}{many.pk}/change/"
    )
