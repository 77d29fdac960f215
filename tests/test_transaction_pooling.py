"""Streamed reads that survive PgBouncer's transaction pooling (portal/db.py).

Behind PgBouncer in transaction mode, a server-side cursor must live inside one transaction:
a bare ``.iterator()`` in autocommit opens it WITH HOLD and fetches in later transactions,
which may run on another server connection. So production code streams through
``portal.db.stream`` (or walks keys with ``portal.db.primary_keys``) and never calls
``.iterator()`` itself.
"""

import ast
from contextlib import closing
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from audit.models import SystemEvent
from audit.services import record_system_event
from portal.db import primary_keys, stream

ROOT = Path(__file__).resolve().parents[1]
# Not production code: the tests, the benchmarks, the migrations and anything installed.
SKIPPED_DIRECTORIES = {"tests", "migrations", "bench", "node_modules", "var"}
ALLOWED = {Path("portal/db.py")}


def production_files() -> list[Path]:
    files = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT)
        directories = relative.parts[:-1]
        if any(part.startswith(".") or part in SKIPPED_DIRECTORIES for part in directories):
            continue  # .venv, .git, tests/, */tests/, */migrations/, bench/
        if relative.name.startswith("test_") or relative.name == "conftest.py":
            continue
        files.append(relative)
    return files


def iterator_calls(source: str) -> list[int]:
    """The lines of ``source`` that call ``.iterator(`` (or ``.aiterator(``) on anything."""
    return sorted(
        node.func.end_lineno  # the line of ``.iterator`` itself, in a chain over many lines
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"iterator", "aiterator"}
    )


def test_the_guard_finds_a_call_wherever_it_is_and_ignores_mere_mentions():
    source = (
        '"""Call .iterator( for speed."""\n'  # 1: a docstring, not a call
        "# queryset.iterator(chunk_size=10)\n"  # 2: a comment
        "def rows(queryset):\n"  # 3
        "    for row in (queryset.filter(a=1)\n"  # 4
        "            .iterator(chunk_size=10)):\n"  # 5: in a chain over lines, found here
        "        yield row\n"
        "async def more(queryset):\n"
        "    return [row async for row in queryset.aiterator()]\n"  # 8
    )
    assert iterator_calls(source) == [5, 8]


def test_no_production_code_opens_a_server_side_cursor_outside_portal_db():
    files = production_files()
    # The walk really covers the apps (and skips what it should), or the guard proves nothing.
    assert Path("activation/exports.py") in files
    assert Path("audit/services.py") in files
    assert Path("portal/settings.py") in files
    assert not any("tests" in path.parts or "migrations" in path.parts for path in files)
    offenders = [
        f"{path}:{line}"
        for path in files
        if path not in ALLOWED
        for line in iterator_calls((ROOT / path).read_text())
    ]
    assert offenders == [], (
        "Call portal.db.stream (or portal.db.primary_keys) instead of .iterator(): behind "
        "PgBouncer in transaction pooling mode a cursor opened outside a transaction breaks. "
        f"Found at {', '.join(offenders)}"
    )


def open_cursors() -> list[tuple[str, bool]]:
    """The server-side cursors of this connection: (name, whether it outlives a transaction)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, is_holdable FROM pg_cursors")
        return cursor.fetchall()


def in_autocommit() -> bool:
    """No transaction open, as between requests: nothing is left to the next one."""
    return not connection.in_atomic_block and connection.get_autocommit()


@pytest.fixture
def five_events(transactional_db) -> list[int]:
    return [record_system_event(kind="core.paused", data={"n": n}).pk for n in range(5)]


@pytest.mark.postgres
def test_a_bare_iterator_outside_a_transaction_opens_a_cursor_that_outlives_it(five_events):
    """Why portal.db exists: this is the cursor PgBouncer's transaction pooling breaks."""
    rows = SystemEvent.objects.order_by("seq").iterator(chunk_size=2)
    with closing(rows):
        next(rows)
        assert in_autocommit()
        assert [holdable for _name, holdable in open_cursors()] == [True]


@pytest.mark.postgres
def test_a_stream_yields_every_row_from_a_cursor_inside_one_transaction(five_events):
    rows = stream(SystemEvent.objects.order_by("seq"), chunk_size=2)
    assert in_autocommit()  # nothing happens before the first row is asked for
    seen = []
    for event in rows:
        seen.append(event.pk)
        assert connection.in_atomic_block
        assert not connection.get_autocommit()
        # WITHOUT HOLD: the cursor lives and dies with the transaction PgBouncer keeps pinned.
        assert [holdable for _name, holdable in open_cursors()] == [False]
    assert seen == five_events  # three chunks, every row, in order
    assert in_autocommit()
    assert open_cursors() == []


@pytest.mark.postgres
def test_a_stream_closed_early_leaves_no_transaction_and_no_cursor(five_events):
    rows = stream(SystemEvent.objects.order_by("seq"), chunk_size=2)
    assert [next(rows).pk for _ in range(3)] == five_events[:3]  # into the second chunk
    assert connection.in_atomic_block
    rows.close()
    assert in_autocommit()
    assert open_cursors() == []
    # And the connection is fit for the next piece of work.
    assert SystemEvent.objects.count() == 5


@pytest.mark.postgres
def test_a_stream_inside_a_transaction_ends_only_its_own_savepoint(five_events):
    from django.db import transaction

    with transaction.atomic():
        record_system_event(kind="core.resumed")
        with closing(stream(SystemEvent.objects.order_by("seq"), chunk_size=2)) as rows:
            assert next(rows).pk == five_events[0]
        # The outer transaction is still open, and what it wrote is still there.
        assert connection.in_atomic_block
        assert SystemEvent.objects.count() == 6
    assert in_autocommit()
    assert SystemEvent.objects.count() == 6


def test_a_stream_holds_a_transaction_only_where_a_server_side_cursor_needs_one(db):
    pks = [record_system_event(kind="core.paused", data={"n": n}).pk for n in range(5)]
    rows = stream(SystemEvent.objects.order_by("seq"), chunk_size=2)
    atomic_depth = len(connection.savepoint_ids)
    assert next(rows).pk == pks[0]
    # PostgreSQL: a savepoint of its own around the cursor. SQLite: none, since with
    # transaction_mode IMMEDIATE it would hold SQLite's write lock while the consumer works.
    opened = len(connection.savepoint_ids) > atomic_depth
    assert opened == (connection.vendor == "postgresql")
    assert [pks[0], *(event.pk for event in rows)] == pks


@pytest.mark.postgres
def test_primary_keys_walk_every_row_in_short_queries_with_no_transaction(five_events):
    keys = primary_keys(SystemEvent.objects.all(), chunk_size=2)
    with CaptureQueriesContext(connection) as queries:
        seen = []
        for pk in keys:
            seen.append(pk)
            assert in_autocommit()
            assert open_cursors() == []
    assert seen == five_events
    walks = [query["sql"] for query in queries if "pg_cursors" not in query["sql"]]
    assert len(walks) == 3  # 2 + 2 + 1 keys: the short last chunk ends the walk
    assert all("LIMIT 2" in sql for sql in walks)


@pytest.mark.django_db
def test_primary_keys_keep_the_filter_and_stop_on_an_exact_last_chunk():
    pks = [record_system_event(kind="core.paused", data={"n": n}).pk for n in range(5)]
    wanted = SystemEvent.objects.exclude(pk=pks[2])
    assert list(primary_keys(wanted, chunk_size=2)) == [pks[0], pks[1], pks[3], pks[4]]
    assert list(primary_keys(wanted, chunk_size=1)) == [pks[0], pks[1], pks[3], pks[4]]
    assert list(primary_keys(SystemEvent.objects.none(), chunk_size=2)) == []
