"""The case timeline: appending events and checking their chain."""

from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import User
from audit.chain import (
    GENESIS_HASH,
    ChainBreak,
    canonical_timestamp,
    chain_hash,
    find_chain_break,
    json_native,
)
from portal.db import stream
from portal.middleware import client_ip
from risk.facts import ClientFacts

from .models import ActivationCase, ActorType, CaseEvent


@dataclass(frozen=True)
class RequestContext:
    """Where an action came from, recorded on the timeline."""

    ip_address: str | None = None
    device_id: str = ""
    user_agent: str = ""
    # Everything the risk checkpoint reads from the request (device, network, client facts).
    client: ClientFacts = field(default_factory=ClientFacts, compare=False)

    @classmethod
    def from_request(cls, request: HttpRequest) -> "RequestContext":
        return cls(
            ip_address=client_ip(request),
            device_id=getattr(request, "device_id", "")[:64],
            user_agent=request.headers.get("User-Agent", "")[:512],
            client=ClientFacts.from_request(request),
        )


SYSTEM_CONTEXT = RequestContext()


def event_fields(event: CaseEvent) -> dict[str, Any]:
    """The fields an event's hash covers, in the form they are hashed."""
    return {
        "case_id": event.case_id,
        "seq": event.seq,
        "kind": event.kind,
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "state_before": event.state_before,
        "state_after": event.state_after,
        "data": event.data,
        "ip_address": event.ip_address,
        "device_id": event.device_id,
        "user_agent": event.user_agent,
        "created_at": canonical_timestamp(event.created_at),
    }


def append_case_event(
    case: ActivationCase,
    *,
    kind: str,
    actor_type: ActorType,
    actor: User | None = None,
    state_before: str = "",
    state_after: str = "",
    data: dict[str, Any] | None = None,
    context: RequestContext = SYSTEM_CONTEXT,
) -> CaseEvent:
    """Append one event to the case's chain; the caller holds the case's row lock."""
    last_seq, last_hash = _chain_head(case.pk)
    event = CaseEvent(
        case=case,
        seq=last_seq + 1,
        kind=kind,
        actor_type=actor_type,
        actor=actor,
        state_before=state_before,
        state_after=state_after,
        data=json_native(data or {}),
        ip_address=context.ip_address,
        device_id=context.device_id,
        user_agent=context.user_agent,
        created_at=timezone.now(),
        prev_hash=last_hash,
    )
    event.hash = chain_hash(event_fields(event), event.prev_hash)
    event.save(force_insert=True)
    _remember_chain_head(case.pk, event.seq, event.hash)
    return event


# The head of each case's chain as this transaction left it, so that a transaction appending
# several events to a case reads the head once. Only while the case's row lock is held, so only
# inside the transaction that took it: Django gives the connection a new list of commit hooks
# (``run_on_commit``) when the transaction ends, either way, and when any savepoint rolls back
# (which may have taken an event with it); a head remembered beside another list is not used.
# Every event is appended here; the unique (case, seq) constraint would refuse a stale head.


def _chain_head(case_id: int) -> tuple[int, str]:
    connection = transaction.get_connection()
    remembered = getattr(connection, "case_chain_heads", None)
    if remembered is not None and remembered[0] is connection.run_on_commit:
        head = remembered[1].get(case_id)
        if head is not None:
            return head
    last = CaseEvent.objects.filter(case_id=case_id).order_by("-seq").values("seq", "hash").first()
    return (last["seq"], last["hash"]) if last else (0, GENESIS_HASH)


def _remember_chain_head(case_id: int, seq: int, hash_: str) -> None:
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        return  # the next append is another transaction, whoever appends in between
    remembered = getattr(connection, "case_chain_heads", None)
    if remembered is None or remembered[0] is not connection.run_on_commit:
        remembered = connection.case_chain_heads = (connection.run_on_commit, {})
    remembered[1][case_id] = (seq, hash_)


def find_case_chain_break(case_id: int) -> ChainBreak | None:
    """Check one case's whole chain, reading it in order without holding it all in memory."""
    events = stream(CaseEvent.objects.filter(case_id=case_id).order_by("seq"), chunk_size=500)
    # Closed at the first break, so the read's transaction ends here, not when collected.
    with closing(events):
        return find_chain_break(
            (event.pk, event.seq, event_fields(event), event.prev_hash, event.hash)
            for event in events
        )
