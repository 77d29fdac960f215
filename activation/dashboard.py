"""What the back-office dashboard shows, read and shaped for charts and tables.

Every figure comes from ``selectors`` (a fixed handful of indexed queries) and the cache (the
breakers and the worker heartbeat); nothing is kept between requests.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.translation import gettext as _

from portal.charts import Chart, Series, horizontal_bars, stacked_columns
from portal.metrics import read_cache

from . import selectors
from .models import CaseState, CoreSubmissionSwitch, FailureReason

logger = logging.getLogger(__name__)

HOURS = 24


def format_duration(seconds: float) -> str:
    """A short, translated duration: "45 s", "12 min", "3 h 5 min", "2 d 4 h"."""
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return _("%(s)d s") % {"s": seconds}
    minutes = seconds // 60
    if minutes < 60:
        return _("%(m)d min") % {"m": minutes}
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return _("%(h)d h %(m)d min") % {"h": hours, "m": minutes}
    days, hours = divmod(hours, 24)
    return _("%(d)d d %(h)d h") % {"d": days, "h": hours}


@dataclass(frozen=True)
class HourRow:
    label: str
    counts: list[int]  # in the order of the chart's series
    total: int


@dataclass(frozen=True)
class Figure:
    """A chart and the same numbers as table rows, for screen readers and for copying."""

    chart: Chart
    series: list[Series]


def _last_hours(now: datetime) -> list[datetime]:
    current = timezone.localtime(now).replace(minute=0, second=0, microsecond=0)
    return [current - timedelta(hours=HOURS - 1 - i) for i in range(HOURS)]


def outcomes_figure(now: datetime) -> tuple[Figure, list[HourRow], dict[str, int]]:
    """Activations per hour by outcome over the last 24 hours (this hour included)."""
    hours = _last_hours(now)
    counts = selectors.outcomes_by_hour(hours[0])
    series = [Series(state, CaseState(state).label) for state in selectors.OUTCOME_STATES]
    per_hour = [{s.key: counts.get((hour, s.key), 0) for s in series} for hour in hours]
    labels = [f"{hour:%H}:00" for hour in hours]
    chart = stacked_columns(labels, series, per_hour, label_every=3)
    rows = [
        HourRow(label, [values[s.key] for s in series], sum(values.values()))
        for label, values in zip(labels, per_hour, strict=True)
    ]
    totals = {s.key: sum(values[s.key] for values in per_hour) for s in series}
    return Figure(chart, series), rows, totals


def failures_figure(now: datetime) -> tuple[Figure, list[tuple[str, int]]]:
    """Failures and hand-overs to staff in the last 24 hours, by reason, most frequent first."""
    counts = selectors.failures_by_reason(now - timedelta(hours=HOURS))
    rows = sorted(
        ((FailureReason(reason).label, count) for reason, count in counts.items()),
        key=lambda row: -row[1],
    )
    chart = horizontal_bars(
        [(str(label), count, str(count)) for label, count in rows], series="failure"
    )
    return Figure(chart, [Series("failure", _("Failures"))]), rows


def resolution_figure(
    now: datetime,
) -> tuple[Figure, selectors.ResolutionTimes, list[tuple[str, str]]]:
    """Percentiles of time from opening to settling, for cases settled in the last 24 hours."""
    times = selectors.resolution_times(now - timedelta(hours=HOURS))
    bars = [
        (_("%(p)dth percentile") % {"p": p}, seconds, format_duration(seconds))
        for p, seconds in times.seconds.items()
    ]
    chart = horizontal_bars(bars, series="resolution")
    rows = [(label, shown) for label, _seconds, shown in bars]
    return Figure(chart, [Series("resolution", _("Time to resolution"))]), times, rows


@dataclass(frozen=True)
class Health:
    paused: bool
    switch: CoreSubmissionSwitch | None
    # Each breaker's state ("closed", "open", "half_open"), or None if the cache did not answer.
    core_breaker: str | None
    sms_breaker: str | None
    heartbeat_age: float | None
    cache_answered: bool


def health() -> Health:
    switch = CoreSubmissionSwitch.objects.filter(pk=1).select_related("changed_by").first()
    # If the cache is down, the page still shows the database's figures.
    readings = read_cache()
    breakers = readings.breakers if readings else {}
    return Health(
        paused=bool(switch and switch.paused),
        switch=switch,
        core_breaker=breakers.get("core"),
        sms_breaker=breakers.get("sms_gateway"),
        heartbeat_age=readings.heartbeat_age if readings else None,
        cache_answered=readings is not None,
    )


def _listed(pairs) -> str:
    return _(", ").join(f"{label} {value}" for label, value in pairs)


def dashboard_context(now: datetime) -> dict:
    outcomes, hour_rows, outcome_totals = outcomes_figure(now)
    failures, failure_rows = failures_figure(now)
    resolution, resolution_times, resolution_rows = resolution_figure(now)
    queue = selectors.review_queue()
    backlog = selectors.outbox_backlog(now)
    watch = selectors.open_case_watch(now)
    status = health()
    return {
        "now": now,
        "outcomes": outcomes,
        "hour_rows": hour_rows,
        "outcomes_summary": _("Outcomes in the last 24 hours: %(counts)s.")
        % {"counts": _listed((s.label, outcome_totals[s.key]) for s in outcomes.series)},
        "failures": failures,
        "failure_rows": failure_rows,
        "failures_summary": _("Failures and hand-overs to staff in the last 24 hours: %(counts)s.")
        % {"counts": _listed(row for row in failure_rows if row[1]) or _("none")},
        "resolution": resolution,
        "resolution_times": resolution_times,
        "resolution_rows": resolution_rows,
        "resolution_summary": _("Time to resolution: %(times)s.")
        % {"times": _listed(resolution_rows)},
        "queue": queue,
        "oldest_waiting": format_duration((now - queue.oldest_since).total_seconds())
        if queue.oldest_since
        else None,
        "backlog": backlog,
        "oldest_due": format_duration((now - backlog.oldest_due_since).total_seconds())
        if backlog.oldest_due_since
        else None,
        "watch": watch,
        "health": status,
        "heartbeat_age": None
        if status.heartbeat_age is None
        else format_duration(status.heartbeat_age),
    }
