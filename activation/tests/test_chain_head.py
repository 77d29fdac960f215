"""A transaction reads a case's chain head once; a head it remembered never outlives it."""

import threading

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from activation.models import ActorType, CaseEvent
from activation.timeline import append_case_event, find_case_chain_break
from tests.factories import open_failed_case


def _append(case, n: int) -> CaseEvent:
    return append_case_event(case, kind="note.added", actor_type=ActorType.SYSTEM, data={"n": n})


def _head_reads(queries) -> int:
    return sum(
        1
        for query in queries
        if query["sql"].startswith("SELECT") and "activation_caseevent" in query["sql"]
    )


def _seqs(case) -> list[int]:
    return list(CaseEvent.objects.filter(case=case).order_by("seq").values_list("seq", flat=True))


@pytest.mark.django_db(transaction=True)
def test_one_transaction_reads_the_head_once_for_all_its_events():
    case = open_failed_case()
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        for n in range(4):
            _append(case, n)
    assert _head_reads(queries) == 1
    assert _seqs(case) == [1, 2, 3, 4, 5]
    assert find_case_chain_break(case.pk) is None


@pytest.mark.django_db(transaction=True)
def test_an_event_rolled_back_with_its_savepoint_is_not_the_head():
    case = open_failed_case()
    with transaction.atomic():
        _append(case, 1)
        with pytest.raises(RuntimeError), transaction.atomic():
            _append(case, 2)
            raise RuntimeError("the step failed")
        third = _append(case, 3)
    assert third.seq == 3
    assert _seqs(case) == [1, 2, 3]
    assert find_case_chain_break(case.pk) is None


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_transaction_leaves_no_head_behind():
    case = open_failed_case()
    with pytest.raises(RuntimeError), transaction.atomic():
        _append(case, 1)
        raise RuntimeError("the request failed")
    with transaction.atomic():
        assert _append(case, 2).seq == 2
    assert find_case_chain_break(case.pk) is None


@pytest.mark.django_db(transaction=True)
def test_events_another_process_appended_since_are_read():
    case = open_failed_case()
    with transaction.atomic():
        _append(case, 1)

    def elsewhere() -> None:  # another connection, as another web node or worker would
        try:
            with transaction.atomic():
                _append(case, 2)
                _append(case, 3)
        finally:
            connection.close()

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    with transaction.atomic():
        assert _append(case, 4).seq == 5
    assert find_case_chain_break(case.pk) is None
