"""Monitoring benchmark: a /metrics scrape and the back-office dashboard at 1,000,000 cases.

    python -m bench.monitoring --cases 1000000

Fills a fresh database (in SQL) with a small history first and times a scrape
(``portal.metrics.render_metrics``) and the dashboard's reads (``activation.dashboard``) on it:
that is the baseline. Then it grows the same database to ``--cases`` cases, each with its
opening, its outcome and filler events, spread over 30 days (a day's traffic is about 1/30 of
the cases), and times both again. The ratio large ÷ small says whether the cost follows the
table's size (bad) or only the open cases and the last 24 hours (what the indexes are for).
It also reports the query count of each and the plans' scan types.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg

from bench.surge import json_from_child

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "activation_rescue_bench_monitoring"
PG = "postgres://postgres@127.0.0.1:5432"
SMALL = 1_000
DAYS = 30

# Where cases end up, as a share of all (the open ones are what the gauges read).
STATES = [
    ("activated", 0.90),
    ("closed", 0.05),
    ("failed", 0.025),
    ("needs_review", 0.01),
    ("pending_verification", 0.01),
    ("submitting", 0.0025),
    ("awaiting_confirmation", 0.0025),
]
REASONS = ["code_expired", "core_busy", "core_unavailable", "sync_timeout", "code_invalid"]


def _state_case_sql() -> str:
    """A CASE picking each row's state from a uniform random number ``r``."""
    arms, edge = [], 0.0
    for state, share in STATES[:-1]:
        edge += share
        arms.append(f"WHEN r < {edge:.4f} THEN '{state}'")
    return f"CASE {' '.join(arms)} ELSE '{STATES[-1][0]}' END"


def _max_id(db, table: str) -> int:
    return db.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]


def _risk_level_sql(risk_levels: Sequence[tuple[str, float]]) -> str:
    """A CASE picking each row's risk level from a uniform random number ``q``."""
    arms, edge = [], 0.0
    for level, share in risk_levels[:-1]:
        edge += share
        arms.append(f"WHEN q < {edge:.4f} THEN '{level}'")
    return f"CASE {' '.join(arms)} ELSE '{risk_levels[-1][0]}' END"


def fill(
    first: int,
    count: int,
    filler_events: int,
    *,
    database: str = DB_NAME,
    risk_levels: Sequence[tuple[str, float]] = (("low", 1.0),),
    assignees: Sequence[int] = (),
) -> None:
    """Add ``count`` customers (numbered from ``first``), each with a line, a case, its events
    and its request to the core, in ``database``.

    ``risk_levels`` are (level, share) pairs; two in three open cases in review or failed are
    assigned, in turn, to the staff ids in ``assignees`` (none when it is empty).
    """
    assignee = (
        f"CASE WHEN state IN ('failed', 'needs_review') AND id %% 3 <> 0"
        f" THEN (ARRAY{list(assignees)!r}::bigint[])[1 + (id %% {len(assignees)})] END"
        if assignees
        else "NULL::bigint"
    )
    with psycopg.connect(f"{PG}/{database}", autocommit=True) as db:
        users, lines, cases = (
            _max_id(db, t)
            for t in ("accounts_user", "activation_creditline", "activation_activationcase")
        )
        db.execute(
            "INSERT INTO accounts_user (password, is_superuser, username, first_name, last_name,"
            " email, is_staff, is_active, date_joined, phone_number, customer_reference,"
            " preferred_language) SELECT '!', false, 'c' || n, 'Wei', 'Zhang', '', false, true,"
            " now(), '+86139' || lpad(n::text, 8, '0'), 'C-' || n, ''"
            " FROM generate_series(%s::int, %s::int) n",
            [first, first + count - 1],
        )
        db.execute(
            "INSERT INTO activation_creditline (customer_id, reference, product_name, credit_limit,"
            " status, core_version, core_activation_id, created_at)"
            " SELECT id, 'CL-' || id, 'Installment Plus', 1000, 'active', 1, '', now()"
            " FROM accounts_user WHERE id > %s",
            [users],
        )
        # Cases opened one after another over the last 30 days (so, as in production, a day's
        # rows lie together on disk), each settled (or last moved) up to two hours later;
        # failed and in-review cases keep a reason.
        db.execute(
            f"INSERT INTO activation_activationcase (credit_line_id, state, failure_reason,"
            f" failure_detail, risk_level, retry_count, opened_at, state_changed_at, sla_due_at,"
            f" closed_at, assignee_id)"
            f" SELECT id, state, CASE WHEN state IN ('failed', 'needs_review')"
            f"   THEN (ARRAY{REASONS!r})[1 + (id %% {len(REASONS)})] ELSE '' END,"
            f"  '', {_risk_level_sql(risk_levels)}, 1, opened, changed,"
            f"  opened + interval '15 minutes',"
            f"  CASE WHEN state IN ('activated', 'closed') THEN changed END, {assignee}"
            f" FROM (SELECT id, {_state_case_sql()} AS state, opened, q,"
            f"   least(opened + s * interval '2 hours', now()) AS changed"
            f"   FROM (SELECT id, random() AS r, random() AS s, random() AS q,"
            f"     now() - interval '{DAYS} days' * (1 - (id - %s)::float / %s) AS opened"
            f"     FROM activation_creditline WHERE id > %s) l) c",
            [lines, count, lines],
        )
        # The opening, filler events (codes sent), and the outcome as the last event.
        db.execute(
            "INSERT INTO activation_caseevent (case_id, seq, kind, actor_type, state_before,"
            " state_after, data, device_id, user_agent, created_at, prev_hash, hash)"
            " SELECT c.id, s,"
            "  CASE WHEN s = 1 THEN 'case.opened' WHEN s = %(last)s THEN 'state.changed'"
            "       ELSE 'verification.sent' END,"
            "  'system', CASE WHEN s = %(last)s THEN 'submitting' ELSE '' END,"
            "  CASE WHEN s = 1 THEN 'failed' WHEN s = %(last)s THEN c.state ELSE '' END,"
            "  jsonb_build_object('reason', c.failure_reason), '', '',"
            "  CASE WHEN s = %(last)s THEN c.state_changed_at"
            "       ELSE c.opened_at + s * interval '1 second' END,"
            "  repeat('0', 64), md5(c.id || ':' || s) || md5(s || ':' || c.id)"
            " FROM activation_activationcase c, generate_series(1, %(last)s) s"
            " WHERE c.id > %(cases)s",
            {"last": 2 + filler_events, "cases": cases},
        )
        # Every case went to the core once; those still on their way have it pending.
        db.execute(
            "INSERT INTO activation_corerequest (case_id, idempotency_key, payload, status,"
            " attempts, next_attempt_at, last_error, created_at, completed_at)"
            " SELECT id, gen_random_uuid(), '{}'::jsonb,"
            "  CASE WHEN state IN ('submitting', 'awaiting_confirmation') THEN 'pending'"
            "       ELSE 'done' END, 1, opened_at, '', opened_at, state_changed_at"
            " FROM activation_activationcase WHERE id > %s",
            [cases],
        )
        db.execute("VACUUM ANALYZE")  # what autovacuum keeps up in production


def measure(repeats: int) -> dict:
    """Run in a child process with Django set up on the benchmark database."""
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from activation import selectors
    from activation.dashboard import dashboard_context
    from portal.metrics import render_metrics

    def timed(function) -> dict:
        function()  # warm: connection, caches, plans
        seconds = []
        for _ in range(repeats):
            began = time.perf_counter()
            function()
            seconds.append(time.perf_counter() - began)
        with CaptureQueriesContext(connection) as queries:
            function()
        return {
            "median_ms": round(statistics.median(seconds) * 1000, 2),
            "max_ms": round(max(seconds) * 1000, 2),
            "queries": len(queries),
        }

    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM activation_activationcase")
        cases = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM activation_caseevent")
        events = cursor.fetchone()[0]
        plans = {}
        for name, queryset in {
            "outcomes_by_hour": selectors.outcome_events(now - timezone.timedelta(hours=24)),
            "open_cases": selectors.ActivationCase.objects.filter(state__in=selectors.OPEN_STATES),
        }.items():
            sql, params = queryset.query.sql_with_params()
            cursor.execute("EXPLAIN " + sql, params)
            plans[name] = [row[0].strip() for row in cursor.fetchall() if "Scan" in row[0]]
    return {
        "cases": cases,
        "events": events,
        "scrape": timed(render_metrics),
        "dashboard": timed(lambda: dashboard_context(timezone.now())),
        "plans": plans,
    }


def measure_in_child(env: dict[str, str], repeats: int) -> dict:
    return json_from_child(["-m", "bench.monitoring", "--measure", "--repeats", str(repeats)], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--filler-events", type=int, default=2, help="per case, besides two")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.measure:
        print(json.dumps(measure(options.repeats)))
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TEST_"))}
    workdir = ROOT / "var" / "bench-monitoring"
    workdir.mkdir(parents=True, exist_ok=True)
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        DATABASE_URL=f"{PG}/{DB_NAME}",
        CACHE_URL="rediscache://127.0.0.1:6379/15",
        PORTAL_VAR_DIR=str(workdir),
        LOG_LEVEL="WARNING",
    )
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)

    fill(1, SMALL, options.filler_events)
    small = measure_in_child(env, options.repeats)
    print("small:", json.dumps(small), flush=True)
    print(f"growing to {options.cases} cases …", flush=True)
    began = time.perf_counter()
    fill(SMALL + 1, options.cases - SMALL, options.filler_events)
    print(f"filled in {time.perf_counter() - began:.0f} s", flush=True)
    large = measure_in_child(env, options.repeats)
    print("large:", json.dumps(large), flush=True)
    result = {
        "machine": {"cores": os.cpu_count()},
        "small": small,
        "large": large,
        "ratio_large_to_small": {
            part: round(large[part]["median_ms"] / small[part]["median_ms"], 2)
            for part in ("scrape", "dashboard")
        },
    }
    (ROOT / "var" / "bench-monitoring.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
