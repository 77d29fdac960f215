"""Reading many rows without holding them all, in a way that survives PgBouncer's pooling.

Behind PgBouncer in transaction pooling mode (``DATABASE_TRANSACTION_POOLING``), consecutive
transactions of one Django connection may run on different server connections. A bare
``QuerySet.iterator()`` in autocommit mode opens a server-side cursor ``WITH HOLD`` and fetches
its chunks in later transactions, which may land on a server connection that has never heard of
the cursor. So no code calls ``.iterator()`` itself (tests/test_transaction_pooling.py checks):
it uses ``stream`` for a read in one transaction, or ``primary_keys`` to walk a table in short
queries with no cursor at all.
"""

from collections.abc import Generator, Iterator
from typing import Any, TypeVar

from django.db import connections, transaction
from django.db.models import QuerySet

T = TypeVar("T")


def stream(queryset: QuerySet[Any, T], *, chunk_size: int) -> Generator[T, None, None]:
    """Yield the rows of ``queryset`` ``chunk_size`` at a time, memory staying flat.

    On PostgreSQL the rows come from a server-side cursor inside a transaction of their own (a
    savepoint within one already open). There the cursor is ``WITHOUT HOLD`` and every fetch
    runs on the one server connection PgBouncer gives the transaction. The transaction is
    opened at the first row and ends after the last, or when the generator is closed: a
    consumer that may stop early should close it (``contextlib.closing``), so that nothing else
    it does runs inside this transaction; closing it rolls back, which for a read changes
    nothing. For that reason, write nothing to the database between rows.

    Elsewhere (SQLite in development) there is no server-side cursor to keep alive, and a
    transaction would only hold SQLite's write lock (``transaction_mode`` IMMEDIATE) while the
    consumer works, so the rows are read without one.
    """
    using = queryset.db
    if connections[using].vendor != "postgresql":
        yield from queryset.iterator(chunk_size=chunk_size)
        return
    with transaction.atomic(using=using):
        yield from queryset.iterator(chunk_size=chunk_size)


def primary_keys(queryset: QuerySet[Any, Any], *, chunk_size: int) -> Iterator[Any]:
    """Yield the primary keys of ``queryset`` in ascending order, one short query per chunk.

    Keyset pagination (``pk > the last one seen``) needs neither a cursor nor a transaction
    between chunks, so a job that walks a whole table this way holds no snapshot for its whole
    run. A row added while it runs is seen if its key is past the current chunk.
    """
    keys = queryset.order_by("pk").values_list("pk", flat=True)
    last = None
    while True:
        chunk = list((keys if last is None else keys.filter(pk__gt=last))[:chunk_size])
        yield from chunk
        if len(chunk) < chunk_size:
            return
        last = chunk[-1]
