"""The back office at scale: pages cost the same whatever the number of cases and events, the
case page shows a long timeline a page at a time, counts stop at a cap, and search reads indexes.

``bench/backoffice.py`` times the same pages at 1,000,000 cases; these tests pin the properties
that make that possible, on small data.
"""

import hashlib
import json
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from activation import selectors
from activation.models import (
    ActivationCase,
    ActorType,
    CaseEvent,
    CaseState,
    CoreRequest,
    CreditLine,
    FailureReason,
)

from .test_backoffice import current_code, sign_in

pytestmark = pytest.mark.django_db
QUEUE = "/backoffice/activation/activationcase/"
PAGES = {
    "queue": QUEUE,
    "in review": QUEUE + "?state__exact=needs_review",
    "failed past SLA": QUEUE + "?state__exact=failed&sla=breached",
    "by failure reason": QUEUE + "?failure_reason__exact=core_busy",
    "phone suffix": QUEUE + "?q=0042",
    "whole phone": QUEUE + "?q=%2B8613900000042",
    "reference": QUEUE + "?q=cl-bo-000003",
}
# Where the generated cases end up, in turn.
STATES = [
    (CaseState.ACTIVATED, ""),
    (CaseState.FAILED, FailureReason.CORE_BUSY),
    (CaseState.NEEDS_REVIEW, FailureReason.SYNC_TIMEOUT),
    (CaseState.CLOSED, ""),
    (CaseState.PENDING_VERIFICATION, ""),
]


def make_cases(count: int, *, first: int = 0) -> list[ActivationCase]:
    """``count`` customers (phone numbers ending 0042, 0043 …, some sharing their last four
    digits), each with a line and a case in one of ``STATES``, with two events each."""
    now = timezone.now()
    customers = User.objects.bulk_create(
        User(
            username=f"bo-customer-{n}",
            # Every tenth shares the last four digits of number 42 under another prefix.
            phone_number=f"+86139{(n * 10_000 + 42) if n % 10 == 9 else n + 42:08d}",
            customer_reference=f"C-BO-{n:06d}",
        )
        for n in range(first, first + count)
    )
    lines = CreditLine.objects.bulk_create(
        CreditLine(
            customer=customer,
            reference=f"CL-BO-{n:06d}",
            product_name="Installment Plus",
            credit_limit=Decimal(1000),
        )
        for n, customer in enumerate(customers, start=first)
    )
    cases = ActivationCase.objects.bulk_create(
        ActivationCase(
            credit_line=line,
            state=STATES[n % len(STATES)][0],
            failure_reason=STATES[n % len(STATES)][1],
            opened_at=now - timedelta(hours=n),
            sla_due_at=now - timedelta(hours=n) + timedelta(minutes=15),
        )
        for n, line in enumerate(lines, start=first)
    )
    for case in cases:
        add_events(case, 2)
    return cases


def add_events(case: ActivationCase, count: int, *, first: int = 1) -> None:
    """Events ``first`` … ``first + count - 1`` of ``case``, from a customer's address."""
    now = timezone.now()
    CaseEvent.objects.bulk_create(
        CaseEvent(
            case=case,
            seq=seq,
            kind="verification.sent",
            actor_type=ActorType.CUSTOMER,
            actor=case.credit_line.customer,
            data={"text": f"event number {seq}"},
            ip_address=f"10.9.{seq // 250}.{seq % 250 + 1}",
            device_id=f"device-of-{case.pk}",
            created_at=now - timedelta(minutes=1000 - seq),
            prev_hash="0" * 64,
            hash=hashlib.sha256(f"{case.pk}:{seq}".encode()).hexdigest(),
        )
        for seq in range(first, first + count)
    )


def add_core_requests(case: ActivationCase, count: int) -> None:
    now = timezone.now()
    CoreRequest.objects.bulk_create(
        CoreRequest(
            case=case,
            payload={},
            status=CoreRequest.Status.FAILED,
            last_error=f"attempt {n}",
            created_at=now - timedelta(hours=count - n),
        )
        for n in range(1, count + 1)
    )


@pytest.fixture
def agent_client(client, agent):
    sign_in(client, agent, current_code(agent))
    return client


@pytest.fixture
def pii_client(client, agent):
    agent.user_permissions.add(Permission.objects.get(codename="view_pii"))
    sign_in(client, agent, current_code(agent))
    return client


def queries(client, url: str) -> list[dict]:
    """The queries one request for ``url`` makes, once per-process caches are warm."""
    assert client.get(url).status_code == 200
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return captured.captured_queries


def row_ids(response) -> list[int]:
    found = re.findall(r'<th class="field-id"><a href="[^"]+">(\d+)</a>', response.text)
    return [int(i) for i in found]


def timeline_seqs(response) -> list[int]:
    return [int(s) for s in re.findall(r'<td class="field-seq">(\d+)</td>', response.text)]


# --- Query counts do not follow the data --------------------------------------------------------


def test_the_queue_its_filters_and_search_cost_the_same_queries_for_5_or_40_cases(agent_client):
    make_cases(5)
    few = {name: len(queries(agent_client, url)) for name, url in PAGES.items()}
    make_cases(35, first=5)
    many = {name: len(queries(agent_client, url)) for name, url in PAGES.items()}
    assert few == many


def test_the_queue_never_counts_the_whole_table_for_a_filtered_page(agent_client):
    """Django's "12 results (1,000,000 total)" counts every case on every filtered page."""
    make_cases(5)
    for name, url in PAGES.items():
        if name == "queue":
            continue
        counts = [q["sql"] for q in queries(agent_client, url) if "COUNT(" in q["sql"].upper()]
        assert all("LIMIT" in sql.upper() or "GROUP BY" in sql.upper() for sql in counts), name


@pytest.mark.parametrize("pii", [True, False])
def test_the_case_page_costs_the_same_queries_for_10_or_200_events(client, agent, pii):
    if pii:
        agent.user_permissions.add(Permission.objects.get(codename="view_pii"))
    sign_in(client, agent, current_code(agent))
    short, long = make_cases(2)
    add_events(short, 8, first=3)
    add_events(long, 198, first=3)
    add_core_requests(short, 2)
    add_core_requests(long, 30)
    assert len(queries(client, f"{QUEUE}{short.pk}/change/")) == len(
        queries(client, f"{QUEUE}{long.pk}/change/")
    )


# --- The case page shows a long timeline a page at a time ---------------------------------------


def test_the_case_page_shows_the_newest_50_events_and_pages_reach_the_oldest(agent_client):
    (case,) = make_cases(1)
    add_events(case, 198, first=3)
    url = f"{QUEUE}{case.pk}/change/"

    first = agent_client.get(url)
    assert timeline_seqs(first) == list(range(151, 201))
    assert "Events 151–200 of 200." in first.text
    assert 'href="?timeline=2"' in first.text  # older, as a plain link (no JavaScript)
    assert "event number 150" not in first.text

    second = agent_client.get(url, {"timeline": "2"})
    assert timeline_seqs(second) == list(range(101, 151))
    assert 'href="?timeline=1"' in second.text

    oldest = agent_client.get(url, {"timeline": "4"})
    assert timeline_seqs(oldest) == list(range(1, 51))
    assert 'href="?timeline=5"' not in oldest.text
    # Past the end, or not a number: the nearest page, never an error.
    assert timeline_seqs(agent_client.get(url, {"timeline": "99"})) == list(range(1, 51))
    assert timeline_seqs(agent_client.get(url, {"timeline": "x"})) == list(range(151, 201))
    assert timeline_seqs(agent_client.get(url, {"timeline": "²"})) == list(range(151, 201))


def test_a_short_timeline_is_one_page_without_links(agent_client):
    (case,) = make_cases(1)
    page = agent_client.get(f"{QUEUE}{case.pk}/change/")
    assert timeline_seqs(page) == [1, 2]
    assert "?timeline=" not in page.text


def test_an_older_timeline_page_is_masked_without_view_pii(agent_client):
    (case,) = make_cases(1)
    add_events(case, 98, first=3)
    customer = case.credit_line.customer
    page = agent_client.get(f"{QUEUE}{case.pk}/change/", {"timeline": "2"})
    assert timeline_seqs(page) == list(range(1, 51))
    assert customer.username not in page.text
    assert "10.9.0.2" not in page.text  # the address of event 1
    assert "10.9.*.*" in page.text
    assert f"device-of-{case.pk}" not in page.text


def test_an_older_timeline_page_is_whole_with_view_pii(pii_client):
    (case,) = make_cases(1)
    add_events(case, 98, first=3)
    page = pii_client.get(f"{QUEUE}{case.pk}/change/", {"timeline": "2"})
    assert case.credit_line.customer.username in page.text
    assert "10.9.0.2" in page.text
    assert f"device-of-{case.pk}" in page.text


def test_the_case_page_shows_the_newest_20_core_requests_and_notes(agent_client, agent):
    (case,) = make_cases(1)
    add_core_requests(case, 30)
    CaseEvent.objects.bulk_create(
        CaseEvent(
            case=case,
            seq=seq,
            kind="note.added",
            actor_type=ActorType.STAFF,
            actor=agent,
            data={"text": f"note number {seq}"},
            created_at=timezone.now(),
            prev_hash="0" * 64,
            hash=hashlib.sha256(f"note:{seq}".encode()).hexdigest(),
        )
        for seq in range(3, 33)
    )
    add_events(case, 28, first=33)  # 60 events: page 1 holds 11 … 60, page 2 holds 1 … 10
    url = f"{QUEUE}{case.pk}/change/"

    def times_shown(text: str, note: int) -> int:
        return len(re.findall(rf"note number {note}\b", text))

    newest = agent_client.get(url)
    errors = re.findall(r"attempt (\d+)", newest.text)
    assert sorted(int(n) for n in errors) == list(range(11, 31))  # the 20 newest requests
    assert "The 20 newest notes" in newest.text
    # The notes box holds the newest 20 notes (13 … 32); the timeline holds them all.
    assert times_shown(newest.text, 32) == 2
    assert times_shown(newest.text, 12) == 1
    older = agent_client.get(url, {"timeline": "2"})
    assert times_shown(older.text, 32) == 1
    assert times_shown(older.text, 12) == 0
    assert times_shown(older.text, 5) == 1


# --- Counts stop at a cap -----------------------------------------------------------------------


def test_past_the_cap_the_queue_says_more_than_and_still_pages(agent_client, monkeypatch):
    from activation.admin import ActivationCaseAdmin

    monkeypatch.setattr(selectors, "QUEUE_COUNT_CAP", 6)
    monkeypatch.setattr(ActivationCaseAdmin, "list_per_page", 2)
    cases = make_cases(20)  # 4 of each state
    page = agent_client.get(QUEUE, {"state__exact": "activated"})
    assert "More than" not in page.text
    assert "4 activation cases" in page.text  # under the cap: counted exactly
    page = agent_client.get(QUEUE)
    assert "More than 6 cases" in page.text
    assert "20 activation cases" not in page.text
    assert 'href="?p=3"' in page.text  # pages up to the cap: 6 cases, 2 a page
    # Most overdue first: the oldest cases.
    assert row_ids(agent_client.get(QUEUE, {"p": "2"})) == [cases[17].pk, cases[16].pk]


def test_settled_states_are_counted_up_to_the_cap_open_ones_exactly(agent_client, monkeypatch):
    monkeypatch.setattr(selectors, "QUEUE_COUNT_CAP", 3)
    make_cases(20)  # 4 of each state
    counts = {row.state: (row.count, row.more) for row in selectors.queue_state_counts(3)}
    assert counts[CaseState.ACTIVATED] == (3, True)
    assert counts[CaseState.CLOSED] == (3, True)
    assert counts[CaseState.FAILED] == (4, False)
    assert counts[CaseState.NEEDS_REVIEW] == (4, False)
    assert counts[CaseState.SUBMITTING] == (0, False)
    page = agent_client.get(QUEUE)
    assert "Activated: <strong>3+</strong>" in page.text
    assert "Failed: <strong>4</strong>" in page.text


# --- Search finds the right cases, through indexes ----------------------------------------------


def test_search_by_the_last_four_digits_finds_exactly_the_numbers_ending_so(agent_client):
    cases = make_cases(20)
    # Numbers end 0042 for customers 0, 9 and 19; customer 1's number 00000043 does not.
    assert set(row_ids(agent_client.get(QUEUE, {"q": "0042"}))) == {
        cases[0].pk,
        cases[9].pk,
        cases[19].pk,
    }
    assert row_ids(agent_client.get(QUEUE, {"q": "+8613900000043"})) == [cases[1].pk]
    assert row_ids(agent_client.get(QUEUE, {"q": "cl-bo-000007"})) == [cases[7].pk]
    assert row_ids(agent_client.get(QUEUE, {"q": str(cases[3].pk)})) == [cases[3].pk]
    # The search keeps the queue's filters: 9 and 19 wait for the customer, 0 is activated.
    waiting = agent_client.get(QUEUE, {"q": "0042", "state__exact": "pending_verification"})
    assert set(row_ids(waiting)) == {cases[9].pk, cases[19].pk}


def plan(sql: str) -> str:
    """PostgreSQL's plan for ``sql`` with sequential scans and sorts priced out: what is left
    of them is what no index can replace."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute("EXPLAIN " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def listing_query(client, url: str) -> str:
    """The SQL of the page of cases that ``url`` lists."""
    for query in queries(client, url):
        sql = query["sql"]
        if sql.startswith('SELECT "activation_activationcase"."id"') and "ORDER BY" in sql:
            return sql
    raise AssertionError(f"no listing query for {url}")


def scans_reading_everything(sql: str) -> list[str]:
    """The tables PostgreSQL reads whole (a sequential scan, or an index read end to end with
    no condition) to answer ``sql``, with every way around an index priced out: joins by
    nested loop only, so each table is either looked up through an index or read whole."""
    with connection.cursor() as cursor:
        for setting in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin"):
            cursor.execute(f"SET LOCAL {setting} = off")
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
        (explained,) = cursor.fetchone()
    if isinstance(explained, str):
        explained = json.loads(explained)
    whole = []

    def walk(node: dict) -> None:
        table = node.get("Relation Name")
        if table and node["Node Type"] != "Bitmap Heap Scan" and "Index Cond" not in node:
            whole.append(table)
        for child in node.get("Plans", []):
            walk(child)

    walk(explained[0]["Plan"])
    return whole


@pytest.mark.postgres
@pytest.mark.parametrize("term", ["0042", "+8613900000042", "CL-BO-000003", "a case id"])
def test_search_looks_customers_credit_lines_and_cases_up_through_indexes(agent_client, term):
    cases = make_cases(5)
    term = str(cases[2].pk) if term == "a case id" else term
    searched = [
        sql
        for sql in (
            q["sql"] for q in queries(agent_client, QUEUE + "?q=" + term.replace("+", "%2B"))
        )
        if "activation_activationcase" in sql
        and "WHERE" in sql
        and "GROUP BY" not in sql  # not the counts of cases by state
        and '"state" = ' not in sql
    ]
    assert len(searched) >= 2  # the search, the count and the page
    for sql in searched:
        assert scans_reading_everything(sql) == [], sql


@pytest.mark.postgres
@pytest.mark.parametrize(
    "url",
    [
        QUEUE,
        QUEUE + "?state__exact=needs_review",
        QUEUE + "?state__exact=failed&sla=breached",
        QUEUE + "?failure_reason__exact=core_busy",
    ],
)
def test_a_page_of_the_queue_is_read_in_order_from_an_index(agent_client, url):
    make_cases(5)
    explained = plan(listing_query(agent_client, url))
    assert "Seq Scan on activation_activationcase" not in explained, explained
    assert "Sort" not in explained, explained


def test_the_timeline_is_shown_only_to_staff_who_may_view_events(client):
    from tests.factories import StaffFactory

    staff = StaffFactory()
    staff.user_permissions.add(Permission.objects.get(codename="view_activationcase"))
    sign_in(client, staff, current_code(staff))
    (case,) = make_cases(1)
    page = client.get(f"{QUEUE}{case.pk}/change/")
    assert page.status_code == 200
    assert timeline_seqs(page) == []
    assert 'id="events-group"' not in page.text
    staff.user_permissions.add(Permission.objects.get(codename="view_caseevent"))
    assert timeline_seqs(client.get(f"{QUEUE}{case.pk}/change/")) == [1, 2]
