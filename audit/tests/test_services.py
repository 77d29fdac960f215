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
