"""The back-office dashboard: outcomes per hour, failures by reason, the queue, resolution
times and the safety switches, as SVG charts with the same numbers in tables."""

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from activation import selectors
from activation.dashboard import format_duration
from activation.models import ActorType, CaseState, CoreSubmissionSwitch, FailureReason
from activation.services.emergency import set_core_submissions_paused
from activation.transitions import transition
from portal.breaker import core_breaker
from portal.charts import horizontal_bars, nice_ceiling, stacked_columns
from tests.factories import CustomerFactory, open_failed_case, open_review_case

from .test_backoffice import current_code, sign_in

pytestmark = pytest.mark.django_db

DASHBOARD = "/backoffice/dashboard/"


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(timezone.now().replace(minute=30), tick=False)
    return time_machine


def activate(case) -> None:
    transition(case, to=CaseState.PENDING_VERIFICATION, actor_type=ActorType.CUSTOMER)
    transition(case, to=CaseState.SUBMITTING, actor_type=ActorType.CUSTOMER)
    transition(case, to=CaseState.ACTIVATED, actor_type=ActorType.SYSTEM)


def table(page: str, caption: str) -> list[list[str]]:
    """The rows of the table with ``caption``, as the text of their cells."""
    body = page.split(f"<caption>{caption}</caption>", 1)[1].split("</table>", 1)[0]
    return [
        [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<t[hd][^>]*>.*?</t[hd]>", row)
        ]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


def test_outcomes_are_counted_in_the_hour_they_happened_and_only_within_24_hours(clock):
    old = open_failed_case(reason=FailureReason.CORE_BUSY)  # 25 h ago: outside the window
    clock.shift(timedelta(hours=25))
    now = timezone.now()
    activate(open_failed_case(reason=FailureReason.CODE_INVALID))  # this hour
    clock.shift(timedelta(hours=-3))
    open_failed_case(reason=FailureReason.CORE_UNAVAILABLE)  # three hours ago
    open_review_case(reason=FailureReason.SYNC_TIMEOUT)
    clock.move_to(now, tick=False)
    activate(old)

    counts = selectors.outcomes_by_hour(now - timedelta(hours=24))
    this_hour = timezone.localtime(now).replace(minute=0, second=0, microsecond=0)
    three_ago = this_hour - timedelta(hours=3)
    assert counts == {
        (this_hour, CaseState.FAILED): 1,  # the customer's case opened failed, then activated
        (this_hour, CaseState.ACTIVATED): 2,
        (three_ago, CaseState.FAILED): 2,  # the review case also failed before its hand-over
        (three_ago, CaseState.NEEDS_REVIEW): 1,
    }
    reasons = selectors.failures_by_reason(now - timedelta(hours=24))
    assert reasons[FailureReason.CORE_UNAVAILABLE] == 1
    assert reasons[FailureReason.SYNC_TIMEOUT] == 2  # failed, then sent to staff, same reason
    assert reasons[FailureReason.CODE_INVALID] == 1
    assert reasons[FailureReason.CORE_BUSY] == 0  # 25 hours ago


def test_resolution_percentiles_are_nearest_rank_over_cases_settled_in_the_window(clock):
    minutes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 100]
    for took in minutes:
        case = open_failed_case()
        clock.shift(timedelta(minutes=took))
        activate(case)
        clock.shift(timedelta(minutes=-took))
    times = selectors.resolution_times(timezone.now() - timedelta(hours=24))
    assert times.settled == 10
    assert times.seconds == {50: 5 * 60, 90: 9 * 60, 99: 100 * 60}
    assert selectors.resolution_times(timezone.now() + timedelta(hours=3)).seconds == {}


def test_the_review_queue_names_the_case_waiting_longest(clock, agent):
    first = open_review_case()
    clock.shift(timedelta(minutes=5))
    second = open_review_case()
    second.assignee = agent
    second.save(update_fields=["assignee"])
    queue = selectors.review_queue()
    assert (queue.waiting, queue.unassigned, queue.oldest_case_id) == (2, 1, first.pk)


def test_charts_scale_to_the_largest_value_and_stack_in_order():
    assert [nice_ceiling(v) for v in (0, 1, 3, 10, 11, 240, 501)] == [1, 1, 5, 10, 20, 500, 1000]
    from portal.charts import Series

    series = [Series("a", "A"), Series("b", "B")]
    chart = stacked_columns(["x", "y"], series, [{"a": 2, "b": 3}, {"a": 1}])
    first, second, third = chart.rects
    assert (first.series, second.series, third.series) == ("a", "b", "a")
    # 5 is the top of the scale: the first column fills the plot exactly.
    assert second.y == pytest.approx(chart.plot_top)
    assert first.y + first.height == pytest.approx(chart.plot_bottom)
    plot_height = chart.plot_bottom - chart.plot_top
    assert (first.height, second.height) == (
        pytest.approx(0.4 * plot_height),
        pytest.approx(0.6 * plot_height),
    )
    assert third.height == pytest.approx(0.2 * plot_height) and third.x > first.x
    assert [t.label for t in chart.value_ticks] == ["0", "1", "2", "3", "4", "5"]
    bars = horizontal_bars([("p50", 30, "30 s"), ("p99", 0, "0 s")], series="x")
    assert len(bars.rects) == 1 and [label for *_xy, label in bars.end_labels] == ["30 s", "0 s"]


def test_durations_read_naturally():
    assert [format_duration(s) for s in (0, 59, 60, 3599, 3600 * 3 + 300, 3600 * 50)] == [
        "0 s",
        "59 s",
        "1 min",
        "59 min",
        "3 h 5 min",
        "2 d 2 h",
    ]


def test_staff_read_the_dashboard_with_charts_and_the_same_numbers_in_tables(client, agent, clock):
    activate(open_failed_case())
    activate(open_failed_case())
    open_failed_case(reason=FailureReason.CORE_REJECTED)
    waiting = open_review_case(reason=FailureReason.SYNC_TIMEOUT)
    sign_in(client, agent, current_code(agent))

    page = client.get(DASHBOARD).text

    this_hour = f"{timezone.localtime():%H}:00"
    rows = table(page, "Outcomes per hour, last 24 hours")
    assert rows[0] == [
        "Hour",
        "Activated",
        "Failed",
        "Being reviewed by our staff",
        "Closed",
        "Total",
    ]
    assert len(rows) == 25 and rows[-1] == [this_hour, "2", "4", "1", "0", "7"]
    assert sum(int(row[-1]) for row in rows[1:-1]) == 0
    # The chart draws the same: one rect per non-zero count, titled with it.
    assert f"<title>{this_hour} · Activated: 2</title>" in page
    assert f"<title>{this_hour} · Failed: 4</title>" in page
    assert 'role="img"' in page and "Outcomes in the last 24 hours: Activated 2, Failed 4" in page
    reasons = dict(
        row for row in table(page, "Failures and hand-overs to staff by reason, last 24 hours")[1:]
    )
    assert reasons["The credit system refused the activation"] == "1"
    assert reasons["The credit system did not confirm in time"] == "2"
    assert [row[0] for row in table(page, "Time to resolution, last 24 hours")[1:]] == [
        "50th percentile",
        "90th percentile",
        "99th percentile",
    ]
    assert f'href="/backoffice/activation/activationcase/{waiting.pk}/change/"' in page
    assert "Running" in page and "closed (calls go through)" in page
    # No script, no external resource: everything is drawn on the server.
    assert "<script" not in page.split('id="content-main"', 1)[1]
    assert not re.search(r'(src|href)="(https?:)?//', page)


def test_the_dashboard_shows_the_switch_and_an_open_breaker(client, supervisor):
    set_core_submissions_paused(paused=True, actor=supervisor, reason="Core maintenance", ip=None)
    breaker = core_breaker()
    for _ in range(20):
        breaker.record_failure()
    assert breaker.state() == "open"
    sign_in(client, supervisor, current_code(supervisor))
    page = client.get(DASHBOARD).text
    assert "PAUSED" in page and "open (no calls for now)" in page
    assert CoreSubmissionSwitch.objects.get().paused


def test_the_dashboard_is_in_chinese_for_chinese_staff(client, agent):
    activate(open_failed_case())
    sign_in(client, agent, current_code(agent))
    page = client.get(DASHBOARD, HTTP_ACCEPT_LANGUAGE="zh-hans").text
    assert "每小时结果" in page and "已激活" in page
    assert "Outcomes per hour" not in page


def test_only_staff_who_may_see_cases_open_the_dashboard(client, agent):
    assert client.get(DASHBOARD).status_code == 302  # to the sign-in
    agent.groups.clear()
    sign_in(client, agent, current_code(agent))
    assert client.get(DASHBOARD).status_code == 403


def test_the_sidebar_lists_the_pages_each_role_may_open(client, agent, supervisor):
    sign_in(client, agent, current_code(agent))
    page = client.get(DASHBOARD).text
    assert 'href="/backoffice/dashboard/"' in page
    assert 'href="/backoffice/core-submissions/"' not in page
    client.logout()
    sign_in(client, supervisor, current_code(supervisor))
    page = client.get(DASHBOARD).text
    for url in (
        "dashboard/",
        "core-submissions/",
        "exports/",
        "bulk-recovery/",
        "sign-in-lockouts/",
    ):
        assert f'href="/backoffice/{url}"' in page


def test_the_dashboard_costs_the_same_queries_however_many_cases(client, agent, clock):
    sign_in(client, agent, current_code(agent))
    client.get(DASHBOARD)
    with CaptureQueriesContext(connection) as few:
        assert client.get(DASHBOARD).status_code == 200
    customer = CustomerFactory()
    for _ in range(3):
        activate(open_failed_case(customer))
        open_review_case()
    with CaptureQueriesContext(connection) as more:
        assert client.get(DASHBOARD).status_code == 200
    assert len(more) == len(few) <= 20
