"""The exports PostgreSQL writes itself (COPY) against the rows Python builds, on awkward data.

JSON Lines from COPY must be byte for byte what the Python writer gives for the same rows, and
the XLSX worksheet too; the XLSX is zipped as it is written and refused past a sheet's rows.
"""

import hashlib
import io
import json
import secrets
import zipfile

import pytest
from django.db import connection
from django.utils import timezone

from activation import exports
from activation.exports import COLUMNS, ExportFilters, ExportTooLarge, new_manifest, stream_export
from activation.models import ActorType, CaseEvent
from activation.timeline import RequestContext, append_case_event
from audit.models import SystemEvent
from tests.factories import CustomerFactory, StaffFactory, open_failed_case

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

AWKWARD = 'Zhāng "Wei" \\ back\\slash\nnew line\ttab\x01\x02\x1f\x7f \u2028 😀 ,;'
# Each in an event's own column (its kind), where the SQL that escapes it must find it.
XML_ESCAPED = "&<>\n\r"
FLOATS = [
    0.1,
    1.0,
    100.0,
    -2.5,
    1e-05,
    0.0001,
    123456789.123,
    1 / 3,
    1e15,
    1.5e15,
    1234567890123456.2,
    -9.87654321e15,
    1e16,
    2.5e16,
    1e100,
    1.7976931348623157e308,
    5e-324,
]
DATA = {
    "z": 1,
    "a_longer_key": [1, -2, 9007199254740993, True, False, None, "s", {"y": 2, "b": 1}],
    "ä": "non-ASCII key",
    "B": "capital sorts first",
    "nested": {"longest key": {"k": [], "kk": {}}, "x": '\\"\n\r\t\x08\x1b</t>&<'},
    "floats": FLOATS,
    "ip_changed": {"from": "10.1.2.3", "to": "2001:db8:85a3::8a2e:370:7334", "n": 3, "e": ""},
    "empty": "",
    "-": "=HYPERLINK()",
}


@pytest.fixture
def awkward_history():
    """Events whose every text column holds what escaping gets wrong, and odd JSON data."""
    customer = CustomerFactory(
        first_name=AWKWARD, last_name="=1+1", customer_reference="@SUM(A1) \\ \"'"
    )
    staff = StaffFactory(username='staff-\\"quoted"')
    case = open_failed_case(customer)
    device = RequestContext(ip_address="203.0.113.7", device_id='device\\"é')
    append_case_event(
        case, kind="note.added", actor_type=ActorType.CUSTOMER, actor=customer, data=DATA
    )
    append_case_event(
        case,
        kind="note.added",
        actor_type=ActorType.STAFF,
        actor=staff,
        data={"text": AWKWARD},
        context=RequestContext(ip_address="2001:db8::1", device_id=""),
    )
    append_case_event(case, kind="x", actor_type=ActorType.CUSTOMER, actor=customer, context=device)
    # Data that is not an object (the timeline only writes objects; the export takes any JSON).
    last = CaseEvent.objects.filter(case=case).order_by("-seq").first()
    for n, data in enumerate([[1, {"b": 1.5, "a": None}], "=text", -5, 2.5e-07, {}]):
        CaseEvent.objects.create(
            case=case,
            seq=last.seq + 1 + n,
            kind=f"raw {XML_ESCAPED[n]}",
            actor_type=ActorType.SYSTEM,
            data=data,
            created_at=timezone.now(),
            prev_hash=last.hash,
            hash=f"{n:064d}",
        )
    open_failed_case(CustomerFactory(first_name="", last_name="", phone_number="+1555"))
    return case


def export(fmt: str, *, pii: bool, python: bool, monkeypatch) -> tuple[bytes, dict]:
    with monkeypatch.context() as patch:
        if python:
            # The writer SQLite uses: rows built in Python (``_row``).
            patch.setattr(connection, "vendor", "python-path")
        filters = ExportFilters()
        manifest = new_manifest(filters=filters, fmt=fmt, actor=None, pii=pii)
        content = b"".join(
            stream_export(filters=filters, fmt=fmt, actor=None, pii=pii, manifest=manifest)
        )
    return content, json.loads(manifest.to_json())


def lines(content: bytes) -> list[bytes]:
    """JSON Lines' lines: split at line feeds only (str.splitlines also splits at U+2028)."""
    assert content.endswith(b"\n") or not content
    return content.split(b"\n")[:-1]


def without_time(manifest: dict) -> dict:
    return {key: value for key, value in manifest.items() if key != "exported_at"}


@pytest.mark.parametrize("pii", [False, True], ids=["masked", "with-pii"])
def test_json_lines_from_copy_are_byte_for_byte_the_python_rows(awkward_history, pii, monkeypatch):
    copied, copied_manifest = export("jsonl", pii=pii, python=False, monkeypatch=monkeypatch)
    built, built_manifest = export("jsonl", pii=pii, python=True, monkeypatch=monkeypatch)
    assert copied == built
    assert without_time(copied_manifest) == without_time(built_manifest)
    assert copied_manifest["rows"] == CaseEvent.objects.count() == len(lines(copied))
    assert copied_manifest["sha256"] == hashlib.sha256(copied).hexdigest()
    rows = [json.loads(line) for line in lines(copied)]
    data = next(row["data"] for row in rows if "floats" in row["data"])
    # As PostgreSQL keeps them: 1e+100 comes back as an integer, and both paths say so.
    stored = CaseEvent.objects.get(case=awkward_history, seq=2).data
    assert data["floats"] == stored["floats"] != FLOATS
    assert data["nested"]["x"] == DATA["nested"]["x"]
    text = copied.decode()
    if pii:
        assert AWKWARD in {row["customer_name"].removesuffix(" =1+1") for row in rows}
        assert "203.0.113.7" in text and "10.1.2.3" in text
    else:
        assert {row["customer_name"] for row in rows} == {"Z***", ""}
        assert "203.0.113.7" not in text and "10.1.2.3" not in text
        assert data["ip_changed"] == {"from": "10.1.*.*", "to": "2001:db8:*", "n": 3, "e": ""}
        assert 'device\\\\\\"é' not in text


def test_json_lines_on_postgresql_build_no_row_in_python(awkward_history, monkeypatch):
    def no_python_rows(*args, **kwargs):
        raise AssertionError("a row was built in Python")

    monkeypatch.setattr(exports, "_row", no_python_rows)
    _content, manifest = export("jsonl", pii=False, python=False, monkeypatch=monkeypatch)
    assert manifest["rows"] == CaseEvent.objects.count()


def sheet_xml(content: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(content)) as package:
        assert package.testzip() is None
        return package.read("xl/worksheets/sheet1.xml")


@pytest.mark.parametrize("pii", [False, True], ids=["masked", "with-pii"])
def test_the_xlsx_worksheet_from_copy_is_the_python_one_and_opens_typed(
    awkward_history, pii, monkeypatch
):
    from openpyxl import load_workbook

    copied, copied_manifest = export("xlsx", pii=pii, python=False, monkeypatch=monkeypatch)
    built, built_manifest = export("xlsx", pii=pii, python=True, monkeypatch=monkeypatch)
    assert sheet_xml(copied) == sheet_xml(built)
    assert without_time(copied_manifest) | {"sha256": ""} == without_time(built_manifest) | {
        "sha256": ""
    }
    assert copied_manifest["sha256"] == hashlib.sha256(copied).hexdigest()

    rows = list(load_workbook(io.BytesIO(copied))["events"].iter_rows())
    assert tuple(cell.value for cell in rows[0]) == COLUMNS
    assert len(rows) == 1 + CaseEvent.objects.count() == 1 + copied_manifest["rows"]
    jsonl = export("jsonl", pii=pii, python=False, monkeypatch=monkeypatch)[0]
    for cells, line in zip(rows[1:], lines(jsonl), strict=True):
        expected = json.loads(line)
        assert [cell.data_type for cell in cells] == ["n", "n"] + ["s"] * (len(COLUMNS) - 2)
        values = dict(zip(COLUMNS, (cell.value for cell in cells), strict=True))
        assert values["data"] == json.dumps(expected["data"], sort_keys=True, ensure_ascii=False)
        for column in ("case_id", "seq", "customer_reference", "actor", "kind", "hash"):
            assert values[column] == expected[column]
        # XML cannot hold most control characters: they alone are dropped.
        assert values["customer_name"] == "".join(
            c for c in expected["customer_name"] if c in "\t\n\r" or ord(c) >= 32
        )
    references = {row[COLUMNS.index("customer_reference")].value for row in rows[1:]}
    assert "@SUM(A1) \\ \"'" in references  # text, never a formula


def test_the_xlsx_is_handed_out_while_the_rows_are_still_being_copied(monkeypatch):
    """Flat memory: zipped blocks leave as rows arrive, with no file or workbook in between."""
    case = open_failed_case()
    for _ in range(600):
        # Text that does not compress away, so that the zip has blocks to hand out early.
        pad = secrets.token_hex(100)
        append_case_event(case, kind="note.added", actor_type=ActorType.STAFF, data={"pad": pad})
    monkeypatch.setattr(exports, "_BLOCK", 4096)
    manifest = new_manifest(filters=ExportFilters(), fmt="xlsx", actor=None, pii=True)
    chunks = stream_export(
        filters=ExportFilters(), fmt="xlsx", actor=None, pii=True, manifest=manifest
    )
    first = next(chunks)
    assert first.startswith(b"PK")
    # The COPY is still going: its row count comes when it ends.
    assert manifest.rows == 0
    rest = list(chunks)
    assert len(rest) > 3
    content = first + b"".join(rest)
    assert manifest.rows == 601
    assert manifest.sha256 == hashlib.sha256(content).hexdigest()
    assert sheet_xml(content).count(b"<row>") == 602


@pytest.mark.parametrize("python", [False, True], ids=["copy", "python"])
def test_xlsx_past_a_sheets_rows_is_refused_before_any_byte(awkward_history, python, monkeypatch):
    monkeypatch.setattr(exports, "XLSX_MAX_ROWS", CaseEvent.objects.count() - 1)
    with monkeypatch.context() as patch:
        if python:
            patch.setattr(connection, "vendor", "python-path")
        manifest = new_manifest(filters=ExportFilters(), fmt="xlsx", actor=None, pii=False)
        chunks = stream_export(
            filters=ExportFilters(), fmt="xlsx", actor=None, pii=False, manifest=manifest
        )
        with pytest.raises(ExportTooLarge):
            next(chunks)
    assert not SystemEvent.objects.filter(kind="export.created").exists()
    monkeypatch.setattr(exports, "XLSX_MAX_ROWS", CaseEvent.objects.count())
    assert sheet_xml(export("xlsx", pii=False, python=python, monkeypatch=monkeypatch)[0])


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_copy_rows_leave_in_blocks_not_one_message_per_row(fmt):
    """COPY sends a message per row; each chunk costs a hash update and a write, so gather."""
    case = open_failed_case()
    for n in range(500):
        append_case_event(case, kind="note.added", actor_type=ActorType.STAFF, data={"n": n})
    manifest = new_manifest(filters=ExportFilters(), fmt=fmt, actor=None, pii=False)
    chunks = list(
        stream_export(filters=ExportFilters(), fmt=fmt, actor=None, pii=False, manifest=manifest)
    )
    assert manifest.rows == 501
    assert len(chunks) <= 3


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"states": ("failed",)},
        {"states": ("activated",)},
        {"since": "middle"},
        {"until": "middle"},
    ],
)
def test_the_chain_heads_and_row_count_are_those_of_the_rows_exported(filters, monkeypatch):
    """The heads come from one step back along each case's index, the count from the COPY."""
    for _ in range(3):
        case = open_failed_case()
        for n in range(5):
            append_case_event(case, kind="note.added", actor_type=ActorType.STAFF, data={"n": n})
    events = list(CaseEvent.objects.order_by("created_at", "pk"))
    middle = events[len(events) // 2].created_at
    filters = ExportFilters(
        **{key: middle if value == "middle" else value for key, value in filters.items()}
    )
    results = []
    for python in (False, True):
        with monkeypatch.context() as patch:
            if python:
                patch.setattr(connection, "vendor", "python-path")
            manifest = new_manifest(filters=filters, fmt="jsonl", actor=None, pii=True)
            content = b"".join(
                stream_export(filters=filters, fmt="jsonl", actor=None, pii=True, manifest=manifest)
            )
        results.append((content, manifest.rows, manifest.chain_heads))
    assert results[0] == results[1]
    content, rows, heads = results[0]
    assert rows == len(lines(content))
    assert len(heads) == len({json.loads(line)["case_id"] for line in lines(content)})


def test_the_command_refuses_an_xlsx_past_a_sheets_rows(awkward_history, tmp_path, monkeypatch):
    from django.core.management import CommandError, call_command

    monkeypatch.setattr(exports, "XLSX_MAX_ROWS", 2)
    output = tmp_path / "x.xlsx"
    with pytest.raises(CommandError, match="XLSX holds at most 2 rows"):
        call_command("export_case_history", "--format", "xlsx", "--output", str(output))
    assert output.read_bytes() == b""
    assert not SystemEvent.objects.filter(kind="export.created").exists()


@pytest.mark.parametrize("fmt", ["jsonl", "xlsx"])
def test_data_many_events_share_is_written_as_the_python_writer_writes_it(fmt, monkeypatch):
    """The data written once per distinct text (and forgotten past a bound) reads the same."""
    case = open_failed_case()
    shared = [{"step": n % 3, "reason": "é", "floats": [0.1, 1e-05, 100.0]} for n in range(40)]
    long_ones = [{"text": "x" * 300, "n": n} for n in range(5)]
    for data in shared + long_ones + shared:
        append_case_event(case, kind="state.changed", actor_type=ActorType.SYSTEM, data=data)
    monkeypatch.setattr(exports._WrittenData, "_LIMIT", 2)
    copied, copied_manifest = export(fmt, pii=False, python=False, monkeypatch=monkeypatch)
    built, built_manifest = export(fmt, pii=False, python=True, monkeypatch=monkeypatch)
    if fmt == "xlsx":
        copied, built = sheet_xml(copied), sheet_xml(built)
        assert copied.count(b"<row>") == 1 + CaseEvent.objects.count()
    else:
        assert len(lines(copied)) == CaseEvent.objects.count()
    assert copied == built
    assert copied_manifest["chain_heads"] == built_manifest["chain_heads"]


def test_a_block_with_a_stray_data_mark_is_refused():
    """Two marks a row: the data cannot be told apart otherwise, so nothing is guessed."""
    written = exports._WrittenData(exports._jsonl_data)
    mark = exports._DATA_MARK.encode()
    row = b'{"data": ' + mark + b'{"b": 1, "a": 2}' + mark + b"}\n"
    written_rows = exports._finished_block(bytearray(row * 2), 2, written)
    assert written_rows == b'{"data": {"a": 2, "b": 1}}\n' * 2
    with pytest.raises(ValueError, match="stray data mark"):
        exports._finished_block(bytearray(row + mark + row), 2, written)


@pytest.mark.django_db(transaction=True)
def test_an_export_of_its_own_reads_without_parallel_workers_and_only_itself():
    """A parallel plan sorts every row before the first leaves; the setting ends with the export."""
    open_failed_case()
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_parallel_workers_per_gather")
        (default,) = cursor.fetchone()
    assert default != "0"
    manifest = new_manifest(filters=ExportFilters(), fmt="csv", actor=None, pii=False)
    chunks = stream_export(
        filters=ExportFilters(), fmt="csv", actor=None, pii=False, manifest=manifest
    )
    assert next(chunks).startswith(b"case_id,seq,")  # the header: the COPY is next
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_parallel_workers_per_gather")
        assert cursor.fetchone() == ("0",)
    assert list(chunks)
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_parallel_workers_per_gather")
        assert cursor.fetchone() == (default,)
