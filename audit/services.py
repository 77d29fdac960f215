"""The system audit trail: one hash chain for everything that is not about a single case."""

from contextlib import closing
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from accounts.models import User
from portal.db import stream

from .chain import (
    GENESIS_HASH,
    ChainBreak,
    canonical_timestamp,
    chain_hash,
    find_chain_break,
    json_native,
)
from .models import SystemEvent


def event_fields(event: SystemEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "kind": event.kind,
        "actor_id": event.actor_id,
        "data": event.data,
        "ip_address": event.ip_address,
        "created_at": canonical_timestamp(event.created_at),
    }


@transaction.atomic
def record_system_event(
    *,
    kind: str,
    actor: User | None = None,
    data: dict[str, Any] | None = None,
    ip: str | None = None,
) -> SystemEvent:
    """Append one event to the system trail, one writer at a time."""
    _wait_for_the_chain()
    last = SystemEvent.objects.order_by("-seq").first()
    event = SystemEvent(
        seq=(last.seq + 1) if last else 1,
        kind=kind,
        actor=actor,
        data=json_native(data or {}),
        ip_address=ip,
        created_at=timezone.now(),
        prev_hash=last.hash if last else GENESIS_HASH,
    )
    event.hash = chain_hash(event_fields(event), event.prev_hash)
    event.save(force_insert=True)
    return event


# Any number of our own: the key of the PostgreSQL advisory lock every appender waits on.
SYSTEM_CHAIN_LOCK = 0x41524348  # "ARCH"


def _wait_for_the_chain() -> None:
    """Hold the system trail's append lock until this transaction ends.

    Locking the newest row is not enough: under READ COMMITTED the writer that waited for it
    gets the same (old) newest row back once the first commits, and both compute one ``seq``.
    A transaction-scoped advisory lock serialises the appenders themselves (and works behind a
    transaction-pooling PgBouncer). SQLite already runs one writer at a time.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SYSTEM_CHAIN_LOCK])


def find_system_chain_break() -> ChainBreak | None:
    events = stream(SystemEvent.objects.order_by("seq"), chunk_size=500)
    # Closed at the first break, so the read's transaction ends here, not when collected.
    with closing(events):
        return find_chain_break(
            (event.pk, event.seq, event_fields(event), event.prev_hash, event.hash)
            for event in events
        )
