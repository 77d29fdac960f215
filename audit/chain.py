"""Hash chains that make an append-only log tamper-evident.

Each entry's hash is SHA-256 over the canonical JSON of its fields followed by the previous
entry's hash, so editing, deleting, inserting or reordering any entry breaks every hash after it.
"""

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

GENESIS_HASH = "0" * 64


def json_native(value: Any) -> Any:
    """Return ``value`` as plain JSON types, exactly as it will read back from the database."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def canonical_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_json(fields: Mapping[str, Any]) -> str:
    return json.dumps(
        fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, cls=DjangoJSONEncoder
    )


def chain_hash(fields: Mapping[str, Any], prev_hash: str) -> str:
    return hashlib.sha256((canonical_json(fields) + prev_hash).encode()).hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    """Where a chain stops verifying, and why."""

    seq: int
    event_id: int
    problem: str


def find_chain_break(
    entries: Iterable[tuple[int, int, Mapping[str, Any], str, str]],
) -> ChainBreak | None:
    """Walk ``(id, seq, fields, prev_hash, hash)`` in ``seq`` order; return the first break."""
    expected_prev = GENESIS_HASH
    expected_seq = 1
    for event_id, seq, fields, prev_hash, stored_hash in entries:
        if seq != expected_seq:
            return ChainBreak(
                seq, event_id, f"expected sequence number {expected_seq}, found {seq}"
            )
        if prev_hash != expected_prev:
            return ChainBreak(seq, event_id, "previous hash does not match the event before it")
        if chain_hash(fields, prev_hash) != stored_hash:
            return ChainBreak(seq, event_id, "content does not match its hash")
        expected_prev = stored_hash
        expected_seq += 1
    return None
