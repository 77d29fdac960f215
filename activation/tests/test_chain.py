import pgtrigger
import pytest
from django.db import DatabaseError, connection, transaction

from activation.models import ActivationCase, ActorType, CaseEvent, CaseState
from activation.timeline import append_case_event, find_case_chain_break
from activation.transitions import transition
from tests.factories import open_failed_case

pytestmark = pytest.mark.django_db

TRIGGER = "activation.CaseEvent:append_only"


@pytest.fixture
def case_with_history() -> ActivationCase:
    case = open_failed_case()
    transition(case, to=CaseState.PENDING_VERIFICATION, actor_type=ActorType.CUSTOMER)
    append_case_event(case, kind="verification.sent", actor_type=ActorType.CUSTOMER, data={"n": 1})
    transition(case, to=CaseState.SUBMITTING, actor_type=ActorType.CUSTOMER)
    transition(case, to=CaseState.ACTIVATED, actor_type=ActorType.CORE)
    assert CaseEvent.objects.filter(case=case).count() == 5
    return case


def tamper(sql: str, params: list) -> None:
    """Write past the append-only trigger, as a superuser who disables it would."""
    with pgtrigger.ignore(TRIGGER), connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_an_untouched_chain_verifies(case_with_history):
    assert find_case_chain_break(case_with_history.pk) is None


def test_an_edited_event_is_detected(case_with_history):
    third = CaseEvent.objects.get(case=case_with_history, seq=3)
    tamper("UPDATE activation_caseevent SET data = %s WHERE id = %s", ['{"n": 2}', third.pk])
    chain_break = find_case_chain_break(case_with_history.pk)
    assert (chain_break.seq, chain_break.event_id) == (3, third.pk)
    assert "hash" in chain_break.problem


def test_a_deleted_event_is_detected(case_with_history):
    second = CaseEvent.objects.get(case=case_with_history, seq=2)
    tamper("DELETE FROM activation_caseevent WHERE id = %s", [second.pk])
    chain_break = find_case_chain_break(case_with_history.pk)
    assert chain_break.seq == 3
    assert "sequence" in chain_break.problem


def test_reordered_events_are_detected(case_with_history):
    events = {e.seq: e.pk for e in CaseEvent.objects.filter(case=case_with_history)}
    # Swap the sequence numbers of events 2 and 3 (through a free number, for the unique index).
    tamper("UPDATE activation_caseevent SET seq = 99 WHERE id = %s", [events[2]])
    tamper("UPDATE activation_caseevent SET seq = 2 WHERE id = %s", [events[3]])
    tamper("UPDATE activation_caseevent SET seq = 3 WHERE id = %s", [events[2]])
    chain_break = find_case_chain_break(case_with_history.pk)
    assert chain_break.seq == 2
    assert chain_break.event_id == events[3]


@pytest.mark.postgres
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE activation_caseevent SET kind = 'rewritten' WHERE case_id = %s",
        "DELETE FROM activation_caseevent WHERE case_id = %s",
    ],
)
def test_postgres_refuses_raw_updates_and_deletes_of_events(case_with_history, statement):
    with (
        pytest.raises(DatabaseError, match="append_only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(statement, [case_with_history.pk])
    kinds = list(CaseEvent.objects.filter(case=case_with_history).values_list("kind", flat=True))
    assert len(kinds) == 5
    assert "rewritten" not in kinds
    assert find_case_chain_break(case_with_history.pk) is None
