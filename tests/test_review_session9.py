"""Session 9 review: today's changes attacked from outside, through the real views.

The status page read with ``.only()`` and its layout cached per process and script prefix; the
exports' new JSON Lines paths (quoted times and addresses, the masked device's JSON label) and
data written once per block. Each test is an attack that must fail; a failing test names a finding.
"""

import hashlib
import html
import io
import json
import re

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import connection
from django.templatetags.static import static
from django.test import Client
from django.urls import reverse, set_script_prefix
from django.utils.translation import override

from activation.exports import COLUMNS
from activation.models import ActivationCase, ActorType, CaseEvent, CaseState, FailureReason
from activation.reasons import explain
from activation.tests.test_export_formats import export, lines, sheet_xml
from activation.tests.test_status_floor import CSRF_TOKEN
from activation.tests.test_status_page import STATUS_QUERIES, queries_of
from activation.timeline import RequestContext, append_case_event
from api.tests.test_staff_api import client_for
from tests.factories import CustomerFactory, StaffFactory, open_failed_case
from tests.test_review_issue16 import csv_cells, staff_signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def case(customer):
    return open_failed_case(customer)


@pytest.fixture
def root_prefix():
    """The test client leaves the last request's script prefix set in this thread: reset it."""
    set_script_prefix("/")
    yield
    set_script_prefix("/")


# --- The status page and its JSON ---------------------------------------------------------------


def test_a_case_not_the_customers_or_no_case_is_a_404_on_the_page_and_its_json(client, customer):
    mine, theirs = open_failed_case(customer), open_failed_case(CustomerFactory())
    client.force_login(customer)
    for case_id in (theirs.pk, 0, 2**31, 2**63, 10**30, "0" * 30 + str(theirs.pk)):
        for url in (f"/activation/{case_id}/", f"/activation/{case_id}/status/"):
            response = client.get(url)
            assert response.status_code == 404, url
            assert theirs.credit_line.reference not in response.text
    for junk in ("abc", "-1", "１", "1.0", "%00", "1%0a", "1;", "0x1"):
        for url in (f"/activation/{junk}/", f"/activation/{junk}/status/"):
            assert client.get(url).status_code == 404, url
    assert client.get(f"/activation/{mine.pk}/status/").json()["state"] == "failed"


def test_signed_out_and_staff_read_no_customers_case(client, case):
    for url in (f"/activation/{case.pk}/", f"/activation/{case.pk}/status/"):
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url
    client.force_login(StaffFactory(role="supervisor", is_superuser=True))
    for url in (f"/activation/{case.pk}/", f"/activation/{case.pk}/status/"):
        response = client.get(url)
        # Staff are sent to the back office (or told there is no such case): never the page.
        assert response.status_code in (302, 404), url
        if response.status_code == 302:
            assert response["Location"] == "/backoffice/"
        assert case.credit_line.reference not in response.text


STATE_TEXT = {
    CaseState.PENDING_VERIFICATION: "Retry activation",
    CaseState.SUBMITTING: "Activation in progress.",
    CaseState.AWAITING_CONFIRMATION: "Activation in progress.",
    CaseState.FAILED: "Activation failed.",
    CaseState.NEEDS_REVIEW: "Our staff are looking at your activation.",
    CaseState.ACTIVATED: "Your credit line is active.",
    CaseState.CLOSED: "This activation request was closed.",
}


@pytest.mark.parametrize("state", list(CaseState))
def test_the_page_and_its_json_show_every_state_and_reason_in_its_two_queries(
    client, customer, case, state
):
    reason = FailureReason.CORE_REJECTED
    ActivationCase.objects.filter(pk=case.pk).update(state=state, failure_reason=reason)
    client.force_login(customer)
    page, poll = f"/activation/{case.pk}/", f"/activation/{case.pk}/status/"
    answer = client.get(poll).json()
    assert answer["state"] == state
    assert answer["in_progress"] is (state in ("submitting", "awaiting_confirmation"))
    text = html.unescape(client.get(page).text)
    assert STATE_TEXT[state] in text and STATE_TEXT[state] in html.unescape(answer["html"])
    assert case.credit_line.reference in text
    explained = str(explain(reason).title) in text
    assert explained is (state in ("failed", "needs_review"))
    if state == "failed":
        assert f"Activation failed. {FailureReason.CORE_REJECTED.label}." in text
    # A field the status reads without having loaded would cost a query more, in some state.
    assert queries_of(client, poll) == STATUS_QUERIES


def test_the_layouts_forms_work_with_their_token_and_are_refused_without(customer, case):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(customer)
    page = f"/activation/{case.pk}/"
    tokens = CSRF_TOKEN.findall(browser.get(page).text)
    assert len(tokens) == 2
    assert browser.post("/i18n/setlang/", {"language": "zh-hans"}).status_code == 403
    changed = browser.post(
        "/i18n/setlang/", {"language": "zh-hans", "next": page, "csrfmiddlewaretoken": tokens[1]}
    )
    assert changed.status_code == 302
    chinese = browser.get(page).text
    assert '<html lang="zh-hans">' in chinese
    (_, token) = CSRF_TOKEN.findall(chinese)
    assert browser.post("/accounts/logout/").status_code == 403
    assert browser.get(page).status_code == 200  # still signed in
    assert browser.post("/accounts/logout/", {"csrfmiddlewaretoken": token}).status_code == 302
    assert browser.get(page).status_code == 302  # signed out


def layout_links(text: str) -> set[str]:
    return set(re.findall(r'(?:href|src|action)="([^"#]*)', text))


def through_wsgi(client: Client, path: str, script_name: str = "") -> str:
    """GET ``path`` through Django's WSGI handler, which sets the script prefix (the test client
    does not), with ``client``'s cookies."""
    from django.core import signals
    from django.core.handlers.wsgi import WSGIHandler
    from django.db import close_old_connections
    from django.test import RequestFactory

    cookie = "; ".join(f"{morsel.key}={morsel.coded_value}" for morsel in client.cookies.values())
    environ = RequestFactory(SCRIPT_NAME=script_name, HTTP_COOKIE=cookie).get(path).environ
    statuses = []
    # As the test client does: closing "old" connections would end the test's transaction.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        result = WSGIHandler()(environ, lambda status, headers: statuses.append(status))
        body = b"".join(result)
        result.close()
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)
    assert statuses == ["200 OK"], (path, script_name, statuses)
    return body.decode()


def test_a_script_prefix_links_its_own_pages_and_never_another_requests(
    client, customer, case, root_prefix
):
    client.force_login(customer)
    page = f"/activation/{case.pk}/"
    plain_before = layout_links(through_wsgi(client, page))
    assert "/static/css/site.css" in plain_before
    names = [reverse(name) for name in ("home", "help", "profile", "logout", "set_language")]
    for prefix in ("/portal", "/other/mount", "/portal"):
        links = layout_links(through_wsgi(client, page, prefix))
        for name in names:
            assert prefix + name in links, (prefix, name, links)
        # What {% static %} gives under this prefix (the static storage's own rule).
        set_script_prefix(prefix)
        statics = {static(f"js/{name}.js") for name in ("progress", "device", "passkey")}
        statics.add(static("css/site.css"))
        set_script_prefix("/")
        assert statics <= links, (statics, links)
        assert all(link.startswith(prefix + "/") for link in links - statics - {""}), links
        plain = layout_links(through_wsgi(client, page))
        assert plain == plain_before
        assert not any(link.startswith(("/portal", "/other")) for link in plain), plain


def test_one_languages_layout_does_not_reach_another_browser(customer, case):
    chinese, english = Client(), Client()
    for browser in (chinese, english):
        browser.force_login(customer)
    chinese.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    page = f"/activation/{case.pk}/"
    for _ in range(2):
        zh, en = chinese.get(page).text, english.get(page).text
        assert '<option value="zh-hans" selected>' in zh and "退出登录" in zh
        assert '<option value="en" selected>' in en and "Sign out" in en
        assert "退出登录" not in en and '<option value="zh-hans" selected>' not in en
        assert '<html lang="en">' in en
    with override("zh-hans"):
        assert reverse("help") == "/help/"  # no language in the path to cache by mistake


# --- Exports ------------------------------------------------------------------------------------

MARKS = "\x01\x02\x03"
BREAKING = '"}, {"x": "\\u0000\\\n\r\t\u2028'
SECRETS = (
    "li.secret",
    "Secretname",
    "Zhaofamily",
    "12345678",
    "39123",
    "100.66",
    "::66",
    "0.113.5",
    "serial-SECRET",
    "devmark",
)


@pytest.fixture
def hostile_history():
    """Every text a customer or staff member controls holds the export's marks and JSON breakers."""
    customer = CustomerFactory(
        username=f"li.secret{MARKS}{BREAKING}",
        first_name=f"Secretname{MARKS}",
        last_name=f"Zhaofamily{BREAKING}",
        phone_number="+8613912345678",
        customer_reference=f"ref{MARKS}{BREAKING}",
    )
    case = open_failed_case(customer)
    append_case_event(
        case,
        kind=f"note{MARKS}",
        actor_type=ActorType.CUSTOMER,
        actor=customer,
        data={
            "text": MARKS + BREAKING,
            MARKS: [MARKS, BREAKING, {BREAKING: MARKS}],
            "ip_changed": {"from": "198.51.100.66", "to": "2001:db8::66", MARKS: "203.0.113.5"},
        },
        context=RequestContext(ip_address="198.51.100.66", device_id=f"devmark{MARKS}{BREAKING}"),
    )
    append_case_event(
        case,
        kind=f"staff{BREAKING}",
        actor_type=ActorType.STAFF,
        actor=StaffFactory(username=f"staff{MARKS}{BREAKING}"),
        data={"text": "\x03", "n": [0.1, 1e16, -0.0]},
        context=RequestContext(ip_address="2001:db8::66", device_id="dev-serial-SECRET"),
    )
    append_case_event(case, kind="same", actor_type=ActorType.SYSTEM, data={"text": "\x03"})
    # A second case whose events carry the same data as the first: written once, used twice.
    other = open_failed_case(CustomerFactory(first_name="", last_name="", phone_number="+1555"))
    append_case_event(other, kind="same", actor_type=ActorType.SYSTEM, data={"text": "\x03"})
    return case


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, secret


def jsonl_rows(content: bytes) -> list[dict]:
    rows = [json.loads(line) for line in lines(content)]
    assert all(list(row) == sorted(COLUMNS) for row in rows)
    return rows


@pytest.mark.postgres
@pytest.mark.parametrize("fmt", ["jsonl", "xlsx", "csv"])
@pytest.mark.parametrize("pii", [False, True], ids=["masked", "with-pii"])
def test_marks_and_json_breakers_shift_nothing_and_copy_writes_what_python_writes(
    hostile_history, fmt, pii, monkeypatch
):
    assert connection.vendor == "postgresql"
    copied, copied_manifest = export(fmt, pii=pii, python=False, monkeypatch=monkeypatch)
    built, built_manifest = export(fmt, pii=pii, python=True, monkeypatch=monkeypatch)
    events = CaseEvent.objects.count()
    assert copied_manifest["rows"] == events
    assert copied_manifest["chain_heads"] == built_manifest["chain_heads"]
    if fmt == "jsonl":
        assert copied == built
        rows = jsonl_rows(copied)
        assert len(rows) == events
        texts = [json.dumps(row, ensure_ascii=False) for row in rows]
        data = [row["data"] for row in rows if row["kind"] == f"note{MARKS}"]
        assert data and data[0]["text"] == MARKS + BREAKING
    elif fmt == "xlsx":
        assert sheet_xml(copied) == sheet_xml(built)
        from openpyxl import load_workbook

        sheet = load_workbook(io.BytesIO(copied))["events"]
        rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
        assert len(rows) == events + 1 and all(len(row) == len(COLUMNS) for row in rows)
        texts = ["\n".join(str(value) for value in row) for row in rows]
    else:
        got, want = csv_cells(copied), csv_cells(built)
        assert len(got) == len(want) == events
        for got_row, want_row in zip(got, want, strict=True):
            for column in COLUMNS:
                if column == "data":
                    assert json.loads(got_row[column]) == json.loads(want_row[column])
                else:
                    assert got_row[column] == want_row[column], column
        texts = ["\n".join(row.values()) for row in got]
    if not pii:
        for text in texts:
            assert_no_secret(text)
        assert_no_secret(copied.decode(errors="replace"))
    else:
        assert any("198.51.100.66" in text for text in texts)


@pytest.mark.postgres
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_the_staff_apis_download_is_masked_without_view_pii_and_its_manifest_hashes_it(
    hostile_history, auditor, supervisor, fmt
):
    supervisor.user_permissions.add(Permission.objects.get(codename="view_pii"))
    for staff, pii in ((auditor, False), (supervisor, True)):
        api = client_for(staff, scopes=["read", "export"])
        started = api.post("/api/v1/staff/exports/", {"format": fmt}, format="json")
        assert started.status_code == 201, started.content
        assert started.json()["pii"] is pii
        download = api.get(started.json()["download_url"])
        assert download.status_code == 200
        content = b"".join(download.streaming_content)
        manifest = api.get(started.json()["manifest_url"]).json()
        assert manifest["sha256"] == hashlib.sha256(content).hexdigest()
        assert manifest["rows"] == CaseEvent.objects.count()
        if fmt == "jsonl":
            rows = jsonl_rows(content)
            devices = {row["device_id"] for row in rows}
            assert (f"devmark{MARKS}{BREAKING}" in devices) is pii
            if not pii:
                assert all(device == "" or device.startswith("#") for device in devices)
            text = "\n".join(json.dumps(row, ensure_ascii=False) for row in rows)
        else:
            text = "\n".join("\n".join(row.values()) for row in csv_cells(content))
        if not pii:
            assert_no_secret(text)
            assert_no_secret(content.decode())
        else:
            assert "serial-SECRET" in text


@pytest.mark.postgres
def test_the_back_offices_xlsx_download_is_masked_and_hashed(client, hostile_history):
    from openpyxl import load_workbook

    from activation.models import CaseExport

    staff_signed_in(client, "auditor")
    response = client.post("/backoffice/exports/", {"format": "xlsx"})
    assert response.status_code == 200
    content = b"".join(response.streaming_content)
    record = CaseExport.objects.get(pk=response["X-Export-Id"])
    assert record.pii is False
    assert record.manifest["sha256"] == hashlib.sha256(content).hexdigest()
    sheet = load_workbook(io.BytesIO(content))["events"]
    rows = [[cell.value for cell in row] for row in sheet.iter_rows()]
    assert rows[0] == list(COLUMNS)
    assert all(len(row) == len(COLUMNS) for row in rows)
    assert_no_secret("\n".join(str(value) for row in rows for value in row))


@pytest.mark.postgres
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "xlsx"])
def test_the_commands_manifest_hashes_its_file_and_is_the_plain_json_dump(
    hostile_history, tmp_path, fmt
):
    for n in range(3):  # more chain heads, keys that sort as text ("10" before "9")
        open_failed_case(CustomerFactory(first_name=f"Secretname{n}"))
    output, manifest_path = tmp_path / f"out.{fmt}", tmp_path / "manifest.json"
    call_command(
        "export_case_history",
        "--format",
        fmt,
        "--output",
        str(output),
        "--manifest",
        str(manifest_path),
    )
    content, written = output.read_bytes(), manifest_path.read_text()
    manifest = json.loads(written)
    assert manifest["sha256"] == hashlib.sha256(content).hexdigest()
    assert manifest["rows"] == CaseEvent.objects.count()
    assert manifest["pii"] is False
    assert written.strip() == json.dumps(manifest, indent=2, sort_keys=True)
    heads = {
        str(case_id): {"hash": event.hash, "seq": event.seq}
        for case_id in ActivationCase.objects.values_list("pk", flat=True)
        for event in [CaseEvent.objects.filter(case_id=case_id).order_by("-seq").first()]
    }
    assert manifest["chain_heads"] == heads
    if fmt != "xlsx":
        assert_no_secret(content.decode())
