import pgtrigger
import pytest
from django.db import DatabaseError, connection, transaction

from audit.chain import GENESIS_HASH
from audit.models import SystemEvent
from audit.services import find_system_chain_break, record_system_event

pytestmark = pytest.mark.django_db


def test_system_events_form_one_chain_in_the_order_they_were_recorded():
    first = record_system_event(kind="export.created", data={"rows": 3})
    second = record_system_event(kind="core.paused", data={"reason": "outage"})

    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert find_system_chain_break() is None


def test_an_edited_system_event_breaks_the_chain_at_that_event():
    record_system_event(kind="export.created", data={"rows": 3})
    edited = record_system_event(kind="core.paused", data={"reason": "outage"})
    record_system_event(kind="core.resumed")

    with pgtrigger.ignore("audit.SystemEvent:append_only"):
        SystemEvent.objects.filter(pk=edited.pk).update(data={"reason": "nothing happened"})

    chain_break = find_system_chain_break()
    assert (chain_break.event_id, chain_break.seq) == (edited.pk, 2)


@pytest.mark.postgres
def test_the_database_refuses_to_change_or_delete_a_system_event():
    event = record_system_event(kind="export.created")
    for statement in (
        "UPDATE activation_systemevent SET kind = 'x' WHERE id = %s",
        "DELETE FROM activation_systemevent WHERE id = %s",
    ):
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement, [event.pk])
    event.refresh_from_db()
    assert event.kind == "export.created"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_writers_appending_at_once_each_get_their_own_place_in_the_chain():
    """Found by an outside attack: six sign-ins at once lost audit events to a duplicate seq."""
    import threading

    from django.db import connections

    record_system_event(kind="export.created")  # the trail is not empty: the newest row exists
    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def append(number: int) -> None:
        try:
            start.wait(timeout=10)
            record_system_event(kind="core.paused", data={"writer": number})
        except Exception as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=append, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert list(SystemEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(
        range(1, 8)
    )
    assert find_system_chain_break() is None
