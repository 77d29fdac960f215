import csv
import hashlib
import io
import json

import pgtrigger
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from activation.exports import COLUMNS, ExportFilters, write_export
from activation.models import ActorType, CaseEvent, CaseState
from activation.timeline import append_case_event
from activation.transitions import transition
from audit.models import SystemEvent
from tests.factories import CustomerFactory, open_failed_case

pytestmark = pytest.mark.django_db


@pytest.fixture
def history():
    cases = []
    for n in range(3):
        customer = CustomerFactory(first_name="Wei", last_name=f"Zhang{n}")
        case = open_failed_case(customer)
        transition(case, to=CaseState.PENDING_VERIFICATION, actor_type=ActorType.CUSTOMER)
        append_case_event(
            case,
            kind="verification.sent",
            actor_type=ActorType.CUSTOMER,
            data={"channel": "sms", "note": '逗号, "引号"\n换行'},
        )
        cases.append(case)
    return cases


def export(fmt: str, **options) -> tuple[bytes, dict]:
    out = io.BytesIO()
    manifest = write_export(
        out,
        filters=ExportFilters(**options.pop("filters", {})),
        fmt=fmt,
        actor=None,
        pii=options.get("pii", False),
    )
    return out.getvalue(), json.loads(manifest.to_json())


def database_rows() -> list[tuple]:
    return list(
        CaseEvent.objects.order_by("case_id", "seq").values_list(
            "case_id", "seq", "kind", "data", "hash"
        )
    )


def test_csv_parses_back_to_exactly_the_events(history):
    content, manifest = export("csv")
    rows = list(csv.DictReader(io.StringIO(content.decode())))
    assert tuple(rows[0]) == COLUMNS
    parsed = [
        (int(r["case_id"]), int(r["seq"]), r["kind"], json.loads(r["data"]), r["hash"])
        for r in rows
    ]
    assert parsed == database_rows()
    assert manifest["rows"] == len(rows) == 9


def test_json_lines_parse_back_to_exactly_the_events(history):
    content, manifest = export("jsonl")
    rows = [json.loads(line) for line in content.decode().splitlines()]
    assert [
        (r["case_id"], r["seq"], r["kind"], r["data"], r["hash"]) for r in rows
    ] == database_rows()
    heads = {
        str(c.pk): CaseEvent.objects.filter(case=c).order_by("-seq").values("seq", "hash").first()
        for c in history
    }
    assert manifest["chain_heads"] == heads


def test_names_and_phone_numbers_are_masked_without_pii(history):
    masked, manifest = export("jsonl")
    first = json.loads(masked.decode().splitlines()[0])
    assert first["customer_name"] == "W***"
    assert "****" in first["customer_phone"]
    assert manifest["pii"] is False
    plain, manifest = export("jsonl", pii=True)
    first = json.loads(plain.decode().splitlines()[0])
    assert first["customer_name"] == "Wei Zhang0"
    assert first["customer_phone"].startswith("+86")
    assert manifest["pii"] is True


def test_every_export_is_on_the_audit_trail(history):
    _content, manifest = export("csv", filters={"states": ("pending_verification",)})
    event = SystemEvent.objects.get(kind="export.created")
    assert event.data["rows"] == 9
    assert event.data["sha256"] == manifest["sha256"]
    assert event.data["filters"]["states"] == ["pending_verification"]


def test_verify_export_catches_one_changed_byte(history, tmp_path, capsys):
    call_command(
        "export_case_history",
        "--output",
        str(tmp_path / "x.csv"),
        "--manifest",
        str(tmp_path / "x.json"),
    )
    call_command("verify_export", str(tmp_path / "x.csv"), str(tmp_path / "x.json"))
    assert "OK: 9 rows" in capsys.readouterr().out
    data = bytearray((tmp_path / "x.csv").read_bytes())
    data[200] = ord("A") if data[200] != ord("A") else ord("B")
    (tmp_path / "x.csv").write_bytes(bytes(data))
    with pytest.raises(CommandError):
        call_command("verify_export", str(tmp_path / "x.csv"), str(tmp_path / "x.json"))


def test_a_shortened_chain_is_caught_against_an_earlier_manifest(history, tmp_path):
    call_command(
        "export_case_history",
        "--format",
        "jsonl",
        "--output",
        str(tmp_path / "x.jsonl"),
        "--manifest",
        str(tmp_path / "x.json"),
    )
    call_command("verify_audit_chain")  # intact
    newest = CaseEvent.objects.filter(case=history[1]).order_by("-seq").first()
    with pgtrigger.ignore("activation.CaseEvent:append_only"), connection.cursor() as cursor:
        cursor.execute("DELETE FROM activation_caseevent WHERE id = %s", [newest.pk])
    call_command("verify_audit_chain")  # the chain alone cannot tell
    with pytest.raises(CommandError):
        call_command("verify_audit_chain", "--manifest", str(tmp_path / "x.json"))
    with pytest.raises(CommandError):
        call_command("verify_export", str(tmp_path / "x.jsonl"), str(tmp_path / "x.json"))


def test_verify_audit_chain_names_the_broken_case_and_event(history, capsys):
    victim = CaseEvent.objects.filter(case=history[2], seq=2).get()
    with pgtrigger.ignore("activation.CaseEvent:append_only"), connection.cursor() as cursor:
        cursor.execute("UPDATE activation_caseevent SET kind = 'x' WHERE id = %s", [victim.pk])
    with pytest.raises(CommandError):
        call_command("verify_audit_chain")
    assert f"case {history[2].pk}: event {victim.pk} (seq 2)" in capsys.readouterr().err


def test_the_nightly_check_records_its_result_and_a_failure_shows_on_the_queue(
    history, client, agent
):
    from activation.tasks import verify_audit_chains

    from .test_backoffice import current_code, sign_in

    assert verify_audit_chains() == 0
    assert SystemEvent.objects.get(kind="audit.verified").data["ok"] is True
    sign_in(client, agent, current_code(agent))
    assert "broken chain" not in client.get("/backoffice/activation/activationcase/").text

    victim = CaseEvent.objects.filter(case=history[0], seq=1).get()
    with pgtrigger.ignore("activation.CaseEvent:append_only"), connection.cursor() as cursor:
        cursor.execute("UPDATE activation_caseevent SET kind = 'x' WHERE id = %s", [victim.pk])
    assert verify_audit_chains() == 1
    page = client.get("/backoffice/activation/activationcase/")
    assert "found 1 broken chain" in page.text


EXPORTS = "/backoffice/exports/"


@pytest.fixture
def auditor_client(client, auditor):
    from .test_backoffice import current_code, sign_in

    sign_in(client, auditor, current_code(auditor))
    return client


def download(response) -> bytes:
    return b"".join(response.streaming_content)


def test_an_auditor_downloads_csv_and_the_manifest_beside_it(history, auditor_client):
    response = auditor_client.post(EXPORTS, {"format": "csv"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    content = download(response)
    rows = list(csv.DictReader(io.StringIO(content.decode())))
    assert len(rows) == 9
    manifest = auditor_client.get(f"{EXPORTS}{response['X-Export-Id']}/manifest.json").json()
    assert manifest["rows"] == 9
    assert manifest["sha256"] == hashlib.sha256(content).hexdigest()
    assert manifest["exported_by"] == "auditor-aud"
    assert manifest["pii"] is False
    assert rows[0]["customer_name"] == "W***"


def test_the_xlsx_export_opens_in_openpyxl(history, auditor_client):
    from openpyxl import load_workbook

    response = auditor_client.post(EXPORTS, {"format": "xlsx", "states": ["pending_verification"]})
    workbook = load_workbook(io.BytesIO(download(response)), read_only=True)
    rows = list(workbook["events"].iter_rows(values_only=True))
    assert rows[0] == COLUMNS
    assert len(rows) == 1 + 9


def test_xlsx_is_refused_above_its_row_limit(history, auditor_client, monkeypatch):
    monkeypatch.setattr("activation.admin_views.XLSX_MAX_ROWS", 5)
    response = auditor_client.post(EXPORTS, {"format": "xlsx"})
    assert response.status_code == 200
    assert "choose CSV or JSON Lines" in response.text
    assert not SystemEvent.objects.filter(kind="export.created").exists()


def test_agents_cannot_export(history, client, agent):
    from .test_backoffice import current_code, sign_in

    sign_in(client, agent, current_code(agent))
    assert client.get(EXPORTS).status_code == 403
    assert client.post(EXPORTS, {"format": "csv"}).status_code == 403
    assert not SystemEvent.objects.filter(kind="export.created").exists()


def test_view_pii_unmasks_names_and_phones(history, auditor_client, auditor):
    from django.contrib.auth.models import Permission

    auditor.user_permissions.add(Permission.objects.get(codename="view_pii"))
    content = download(auditor_client.post(EXPORTS, {"format": "jsonl"}))
    first = json.loads(content.decode().splitlines()[0])
    assert first["customer_name"] == "Wei Zhang0"


def test_the_download_streams_before_the_last_row_is_read(auditor_client):
    from activation.models import CaseExport

    case = open_failed_case()
    for n in range(600):
        append_case_event(case, kind="note.added", actor_type=ActorType.STAFF, data={"n": n})
    response = auditor_client.post(EXPORTS, {"format": "csv"})
    chunks = iter(response.streaming_content)
    first = next(chunks)
    assert first.startswith(b"case_id,seq,")
    export = CaseExport.objects.get(pk=response["X-Export-Id"])
    assert export.completed_at is None  # bytes are out while rows are still being read
    rest = b"".join(chunks)
    export.refresh_from_db()
    assert export.manifest["rows"] == 601
    assert export.manifest["sha256"] == hashlib.sha256(first + rest).hexdigest()


def _as_superuser_past_the_trigger(*statements: tuple[str, list]) -> None:
    """Rewrite history as a database superuser would: with triggers switched off."""
    from django.db import transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        for sql, params in statements:
            cursor.execute(sql, params)


def _edit(case):
    event = CaseEvent.objects.get(case=case, seq=2)
    return [
        ("UPDATE activation_caseevent SET data = '{\"tampered\": 1}' WHERE id = %s", [event.pk])
    ]


def _delete(case):
    event = CaseEvent.objects.get(case=case, seq=2)
    return [("DELETE FROM activation_caseevent WHERE id = %s", [event.pk])]


def _insert(case):
    """Make room at seq 2 and put a forged event there."""
    forged = (
        "INSERT INTO activation_caseevent (case_id, seq, kind, actor_type, state_before,"
        " state_after, data, device_id, user_agent, created_at, prev_hash, hash)"
        " VALUES (%s, 2, 'note.added', 'staff', '', '', '{}', '', '', now(), %s, %s)"
    )
    first = CaseEvent.objects.get(case=case, seq=1).hash
    shift = "UPDATE activation_caseevent SET seq = seq + %s WHERE case_id = %s AND seq >= %s"
    return [
        (shift, [100, case.pk, 2]),  # out of the way of the unique (case, seq) first
        (shift, [-99, case.pk, 102]),
        (forged, [case.pk, first, "f" * 64]),
    ]


def _reorder(case):
    two = CaseEvent.objects.get(case=case, seq=2).pk
    three = CaseEvent.objects.get(case=case, seq=3).pk
    return [
        ("UPDATE activation_caseevent SET seq = 99 WHERE id = %s", [two]),
        ("UPDATE activation_caseevent SET seq = 2 WHERE id = %s", [three]),
        ("UPDATE activation_caseevent SET seq = 3 WHERE id = %s", [two]),
    ]


@pytest.mark.postgres
@pytest.mark.parametrize("tamper", [_edit, _delete, _insert, _reorder])
def test_verify_audit_chain_catches_history_rewritten_past_the_trigger(history, tamper, capsys):
    call_command("verify_audit_chain")
    _as_superuser_past_the_trigger(*tamper(history[1]))
    with pytest.raises(CommandError):
        call_command("verify_audit_chain")
    err = capsys.readouterr().err
    assert f"case {history[1].pk}:" in err
    assert f"case {history[0].pk}:" not in err


# --- Spreadsheet formulas and masking in what the back office hands out ---------------------------

FORMULAS = ('=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "\tX", "\rX")


@pytest.fixture
def formula_customers():
    """One case per customer whose name a spreadsheet would run, and one plain customer."""
    for text in FORMULAS:
        open_failed_case(CustomerFactory(first_name=text, last_name=""))
    open_failed_case(CustomerFactory(first_name="Wei", last_name="Zhang"))


@pytest.fixture(params=[pytest.param("copy", marks=pytest.mark.postgres), "python"])
def csv_path(request, monkeypatch):
    """Which CSV writer the export view uses: PostgreSQL's COPY, or rows built in Python."""
    if request.param == "python" and connection.vendor == "postgresql":
        # The Python writer is what SQLite (``make run``) uses; make the export take it here too.
        monkeypatch.setattr(connection, "vendor", "python-path")
    return request.param


def csv_rows(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode(), newline="")))


def export_through_the_view(client, tmp_path, fmt: str) -> bytes:
    """Download an export and check it against its manifest the way an auditor would."""
    response = client.post(EXPORTS, {"format": fmt})
    assert response.status_code == 200
    content = download(response)
    manifest = client.get(f"{EXPORTS}{response['X-Export-Id']}/manifest.json").content
    (tmp_path / f"export.{fmt}").write_bytes(content)
    (tmp_path / "manifest.json").write_bytes(manifest)
    call_command("verify_export", str(tmp_path / f"export.{fmt}"), str(tmp_path / "manifest.json"))
    return content


@pytest.mark.parametrize("pii", [False, True], ids=["masked", "with-pii"])
def test_csv_cells_a_spreadsheet_would_run_as_formulas_start_with_a_quote(
    formula_customers, csv_path, pii, auditor_client, auditor, tmp_path
):
    from django.contrib.auth.models import Permission

    if pii:
        auditor.user_permissions.add(Permission.objects.get(codename="view_pii"))
    content = export_through_the_view(auditor_client, tmp_path, "csv")
    names = {row["customer_name"] for row in csv_rows(content)}
    if pii:
        assert names == {"'" + text for text in FORMULAS} | {"Wei Zhang"}
    else:
        assert names == {"'" + text[0] + "***" for text in FORMULAS} | {"W***"}


# A spreadsheet skips blanks before the "=": spaces, line breaks, no-break and other Unicode
# spaces, and zero-width characters.
HIDDEN_FORMULAS = (
    " =2+2",
    "\n=3+3",
    "\r\n+4",
    "\u00a0=1+1",
    "\t \u3000@SUM(A1)",
    "\u2003-5",
    "\u200b=6",
    "\ufeff\u202f=7",
)
NOT_FORMULAS = ("C-000001", " C-2=3", "\u00a0plain")


@pytest.mark.parametrize("pii", [False, True], ids=["masked", "with-pii"])
def test_csv_cells_with_a_formula_behind_blanks_start_with_a_quote(
    csv_path, pii, auditor_client, auditor, tmp_path
):
    from django.contrib.auth.models import Permission

    if pii:
        auditor.user_permissions.add(Permission.objects.get(codename="view_pii"))
    for reference in HIDDEN_FORMULAS + NOT_FORMULAS:
        open_failed_case(CustomerFactory(customer_reference=reference))
    content = export_through_the_view(auditor_client, tmp_path, "csv")
    references = {row["customer_reference"] for row in csv_rows(content)}
    assert references == {"'" + text for text in HIDDEN_FORMULAS} | set(NOT_FORMULAS)


@pytest.mark.parametrize("pii", [False, True], ids=["masked", "with-pii"])
def test_xlsx_cells_are_strings_never_formulas(
    formula_customers, pii, auditor_client, auditor, tmp_path
):
    from django.contrib.auth.models import Permission
    from openpyxl import load_workbook

    if pii:
        auditor.user_permissions.add(Permission.objects.get(codename="view_pii"))
    content = export_through_the_view(auditor_client, tmp_path, "xlsx")
    sheet = load_workbook(io.BytesIO(content))["events"]
    column = COLUMNS.index("customer_name") + 1
    cells = [sheet.cell(row=n, column=column) for n in range(2, sheet.max_row + 1)]
    assert len(cells) == len(FORMULAS) + 1
    assert {cell.data_type for cell in cells} == {"s"}
    link = FORMULAS[0] if pii else "=***"
    assert link in {cell.value for cell in cells}


@pytest.fixture
def customer_and_staff_events(customer, agent):
    """A customer's own step from an IPv4 address, and a staff note from an IPv6 one."""
    from activation import services
    from activation.services import staff as staff_actions
    from activation.timeline import RequestContext

    case = open_failed_case(customer)
    services.start_verification(
        case_id=case.pk, customer=customer, context=RequestContext(ip_address="203.0.113.7")
    )
    staff_actions.add_note(
        case_id=case.pk,
        staff=agent,
        text="Called the customer.",
        context=RequestContext(ip_address="2001:db8:85a3::8a2e:370:7334"),
    )
    return case


def _actors_and_addresses(rows) -> set[tuple[str, str, str]]:
    return {(row["actor_type"], row["actor"], row["ip_address"]) for row in rows}


def _masked_people_are_as_expected(content: bytes, rows, customer, agent) -> None:
    assert _actors_and_addresses(rows) - {("system", "", "")} == {
        ("customer", customer.username[0] + "***", "203.0.*.*"),
        ("staff", agent.username, "2001:db8:*"),
    }
    assert customer.username not in content.decode()
    assert "203.0.113.7" not in content.decode()


def test_a_masked_csv_masks_a_customer_actor_and_every_address(
    customer_and_staff_events, csv_path, auditor_client, customer, agent, tmp_path
):
    content = export_through_the_view(auditor_client, tmp_path, "csv")
    _masked_people_are_as_expected(content, csv_rows(content), customer, agent)


def test_masked_json_lines_mask_a_customer_actor_and_every_address(
    customer_and_staff_events, auditor_client, customer, agent, tmp_path
):
    content = export_through_the_view(auditor_client, tmp_path, "jsonl")
    rows = [json.loads(line) for line in content.decode().splitlines()]
    _masked_people_are_as_expected(content, rows, customer, agent)


def test_with_view_pii_the_actor_and_address_are_exported_whole(
    customer_and_staff_events, csv_path, auditor_client, auditor, customer, agent, tmp_path
):
    from django.contrib.auth.models import Permission

    auditor.user_permissions.add(Permission.objects.get(codename="view_pii"))
    rows = csv_rows(export_through_the_view(auditor_client, tmp_path, "csv"))
    assert _actors_and_addresses(rows) - {("system", "", "")} == {
        ("customer", customer.username, "203.0.113.7"),
        ("staff", agent.username, "2001:db8:85a3::8a2e:370:7334"),
    }


@pytest.fixture
def address_change(customer):
    """A customer who asked for a code from one address and entered it from another."""
    case = open_failed_case(customer)
    append_case_event(
        case,
        kind="verification.succeeded",
        actor_type=ActorType.CUSTOMER,
        actor=customer,
        data={"ip_changed": {"from": "10.1.2.3", "to": "2001:db8:85a3::8a2e:370:7334"}},
    )
    return case


def _address_changes(rows) -> list:
    """The ``ip_changed`` of each row's data (a JSON string in CSV, an object in JSON Lines)."""
    data = [row["data"] for row in rows]
    data = [json.loads(d) if isinstance(d, str) else d for d in data]
    return [d["ip_changed"] for d in data if "ip_changed" in d]


def test_a_masked_csv_masks_the_addresses_in_an_events_data(
    address_change, csv_path, auditor_client, tmp_path
):
    content = export_through_the_view(auditor_client, tmp_path, "csv")
    assert _address_changes(csv_rows(content)) == [{"from": "10.1.*.*", "to": "2001:db8:*"}]
    assert "10.1.2.3" not in content.decode()
    assert "2001:db8:85a3" not in content.decode()


def test_masked_json_lines_mask_the_addresses_in_an_events_data(
    address_change, auditor_client, tmp_path
):
    content = export_through_the_view(auditor_client, tmp_path, "jsonl")
    rows = [json.loads(line) for line in content.decode().splitlines()]
    assert _address_changes(rows) == [{"from": "10.1.*.*", "to": "2001:db8:*"}]


def test_with_view_pii_the_addresses_in_an_events_data_are_exported_whole(
    address_change, csv_path, auditor_client, auditor, tmp_path
):
    from django.contrib.auth.models import Permission

    auditor.user_permissions.add(Permission.objects.get(codename="view_pii"))
    content = export_through_the_view(auditor_client, tmp_path, "csv")
    assert _address_changes(csv_rows(content)) == [
        {"from": "10.1.2.3", "to": "2001:db8:85a3::8a2e:370:7334"}
    ]


DEVICE_ID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def device_events(customer):
    """Two events from the customer's phone (the same device id), and one from no device."""
    from activation import services
    from activation.timeline import RequestContext

    case = open_failed_case(customer)
    phone = RequestContext(ip_address="203.0.113.7", device_id=DEVICE_ID)
    services.start_verification(case_id=case.pk, customer=customer, context=phone)
    append_case_event(
        case, kind="note.added", actor_type=ActorType.CUSTOMER, actor=customer, context=phone
    )
    return case


def _device_ids(rows) -> set[str]:
    return {row["device_id"] for row in rows}


def test_a_masked_csv_shows_each_device_by_the_risk_panels_hash(
    device_events, csv_path, auditor_client, tmp_path
):
    from risk.signals import pseudonym

    content = export_through_the_view(auditor_client, tmp_path, "csv")
    assert _device_ids(csv_rows(content)) == {"", f"#{pseudonym(DEVICE_ID)}"}
    assert DEVICE_ID not in content.decode()


def test_masked_json_lines_show_each_device_by_the_risk_panels_hash(
    device_events, auditor_client, tmp_path
):
    from risk.signals import pseudonym

    content = export_through_the_view(auditor_client, tmp_path, "jsonl")
    rows = [json.loads(line) for line in content.decode().splitlines()]
    assert _device_ids(rows) == {"", f"#{pseudonym(DEVICE_ID)}"}
    assert DEVICE_ID not in content.decode()


def test_with_view_pii_the_device_id_is_exported_whole(
    device_events, csv_path, auditor_client, auditor, tmp_path
):
    from django.contrib.auth.models import Permission

    auditor.user_permissions.add(Permission.objects.get(codename="view_pii"))
    rows = csv_rows(export_through_the_view(auditor_client, tmp_path, "csv"))
    assert _device_ids(rows) == {"", DEVICE_ID}
