"""Back-office benchmark: the queue, its filters, search and a long case page at 1,000,000 cases.

    python -m bench.backoffice --cases 1000000 [--keep-db]

Creates the database ``activation_rescue_bench_backoffice`` afresh and fills it in SQL with the
monitoring benchmark's generator (``bench.monitoring.fill``): customers with phone numbers, their
credit lines, one case each (mostly settled; some failed, in review or waiting for the core, with
failure reasons, risk levels, SLA times and assignees) and ten events per case. One case in review
gets 200 events (notes among them) and 30 requests to the core. Then, as staff signed in through
the real sign-in form (password and authenticator code), it times through Django's whole stack (the
test client, in-process, production settings) the queue page, the queue filtered by state and SLA
and by failure reason, a search by the last four digits of a phone number and by a whole number,
and the case page with 200 events; once for a member of staff with ``view_pii`` and once for one
without (what they see is masked). Each page is asked ``--requests`` times after a warm-up;
p50/p95, the query count, the slowest query and any sequential scan of a large table in the
page's plans are reported. That is done first on ``SMALL`` cases (the baseline), then again after
the same database has grown to ``--cases``; the ratio large ÷ small says whether a page's cost
follows the table's size. Results go to ``var/bench-backoffice.json``.
"""

import argparse
import base64
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg

from bench import monitoring, surge

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "activation_rescue_bench_backoffice"
PG = monitoring.PG
REDIS_DB = 12
HOST = "localhost"
SMALL = 1_000
EVENTS_PER_CASE = 10
LONG_CASE_EVENTS = 200
LONG_CASE_CORE_REQUESTS = 30
RISK_LEVELS = (("low", 0.90), ("medium", 0.08), ("high", 0.02))
TARGET_P95_MS = 300
# Tables whose sequential scan means a page reads every case, customer or event.
LARGE_TABLES = (
    "accounts_user",
    "activation_creditline",
    "activation_activationcase",
    "activation_caseevent",
    "activation_corerequest",
)
QUEUE = "/backoffice/activation/activationcase/"
# The customer numbered 42 (see ``monitoring.fill``): its number, and the numbers ending as it does.
PHONE = "+8613900000042"
# The staff members' password, made up for each run and handed to the child processes.
PASSWORD_VARIABLE = "BENCH_BACKOFFICE_STAFF_PASSWORD"  # noqa: S105 (a variable's name)


def environment(workdir: Path) -> dict[str, str]:
    """The surge benchmark's production settings, on this benchmark's database and Redis db."""
    return surge.environment_on(workdir, database=DB_NAME, redis_db=REDIS_DB, hosts=HOST)


def create_database(env: dict[str, str]) -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)


def drop_database() -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")


@contextmanager
def events_indexed_afterwards():
    """Drop the event table's secondary indexes and unique constraints for a bulk fill and build
    them again after it, as they were: ten million inserts into the hash's unique index (random
    order) take most of a fill's time, one sorted build a minute."""
    table = "activation_caseevent"
    with psycopg.connect(f"{PG}/{DB_NAME}", autocommit=True) as db:
        constraints = db.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = %s::regclass AND contype = 'u'",
            [table],
        ).fetchall()
        indexes = db.execute(
            "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
            " WHERE indrelid = %s::regclass AND NOT indisprimary AND indexrelid NOT IN"
            "  (SELECT conindid FROM pg_constraint WHERE conrelid = %s::regclass)",
            [table, table],
        ).fetchall()
        for name, _definition in constraints:
            db.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _definition in indexes:
            db.execute(f"DROP INDEX {name}")
    try:
        yield
    finally:
        with psycopg.connect(f"{PG}/{DB_NAME}", autocommit=True) as db:
            db.execute("SET maintenance_work_mem = '512MB'")
            for name, definition in constraints:
                db.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
            for _name, definition in indexes:
                db.execute(definition)
            db.execute(f"ANALYZE {table}")


def lengthen_one_case() -> int:
    """Give the first case in review 200 events (every tenth a staff note) and 30 requests to
    the core; answer its id."""
    with psycopg.connect(f"{PG}/{DB_NAME}", autocommit=True) as db:
        row = db.execute(
            "SELECT id FROM activation_activationcase ORDER BY state <> 'needs_review', id LIMIT 1"
        ).fetchone()
        case_id = row[0]
        db.execute(
            "INSERT INTO activation_caseevent (case_id, seq, kind, actor_type, state_before,"
            " state_after, data, device_id, user_agent, ip_address, created_at, prev_hash, hash)"
            " SELECT %(case)s::bigint, s,"
            "  CASE WHEN s %% 10 = 0 THEN 'note.added' ELSE 'verification.sent' END,"
            "  CASE WHEN s %% 10 = 0 THEN 'staff' ELSE 'customer' END, '', '',"
            "  CASE WHEN s %% 10 = 0 THEN jsonb_build_object('text', 'Called the customer ' || s)"
            "       ELSE jsonb_build_object('channel', 'sms') END,"
            "  'device-' || (s %% 3), 'Mozilla/5.0', ('10.1.2.' || (s %% 250))::inet,"
            "  now() - (%(last)s - s) * interval '1 minute',"
            "  repeat('0', 64), md5(%(case)s || ':' || s) || md5(s || ':' || %(case)s)"
            " FROM generate_series(%(first)s::int, %(last)s::int) s",
            {"case": case_id, "first": EVENTS_PER_CASE + 1, "last": LONG_CASE_EVENTS},
        )
        db.execute(
            "INSERT INTO activation_corerequest (case_id, idempotency_key, payload, status,"
            " attempts, next_attempt_at, last_error, last_status_code, created_at, completed_at)"
            " SELECT %s, gen_random_uuid(), '{}'::jsonb, 'failed', 5, now(), 'HTTP 503', 503,"
            "  now() - n * interval '1 hour', now() - n * interval '1 hour'"
            " FROM generate_series(1, %s::int) n",
            [case_id, LONG_CASE_CORE_REQUESTS - 1],
        )
        db.execute("ANALYZE activation_caseevent")
    return case_id


def create_staff() -> list[int]:
    """Two agents (one may see PII) and a supervisor to be assignees; answer their ids."""
    import django

    django.setup()
    from django.contrib.auth.models import Group, Permission
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from accounts.models import User

    ids = []
    for username, role, pii in (
        ("bench-agent-pii", "agent", True),
        ("bench-agent", "agent", False),
        ("bench-supervisor", "supervisor", False),
    ):
        user = User.objects.create_user(
            username, password=os.environ[PASSWORD_VARIABLE], is_staff=True
        )
        user.groups.add(Group.objects.get(name=role))
        if pii:
            user.user_permissions.add(Permission.objects.get(codename="view_pii"))
        TOTPDevice.objects.create(user=user, name="Authenticator", confirmed=True)
        ids.append(user.pk)
    return ids


def pages(long_case_id: int) -> dict[str, str]:
    return {
        "queue": QUEUE,
        "queue_in_review": QUEUE + "?state__exact=needs_review",
        "failed_past_sla": QUEUE + "?state__exact=failed&sla=breached",
        "by_failure_reason": QUEUE + "?failure_reason__exact=core_busy",
        "search_phone_suffix": QUEUE + "?q=" + PHONE[-4:],
        "search_phone": QUEUE + "?q=" + quote(PHONE),
        "case_page_200_events": f"{QUEUE}{long_case_id}/change/",
    }


def measure(requests: int, long_case_id: int) -> dict:
    """Run in a child process with Django set up on the benchmark database."""
    import django

    django.setup()
    import pyotp
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django_otp.plugins.otp_totp.models import TOTPDevice

    def signed_in(username: str) -> Client:
        device = TOTPDevice.objects.get(user__username=username, confirmed=True)
        code = pyotp.TOTP(base64.b32encode(device.bin_key).decode()).now()
        client = Client(HTTP_HOST=HOST)
        response = client.post(
            "/backoffice/login/",
            {"username": username, "password": os.environ[PASSWORD_VARIABLE], "otp_token": code},
        )
        assert response.status_code == 302, f"{username} could not sign in"
        return client

    def large_table_scans(queries: list[dict]) -> list[str]:
        scans = set()
        with connection.cursor() as cursor:
            for query in queries:
                if not query["sql"].lstrip().upper().startswith("SELECT"):
                    continue
                cursor.execute("EXPLAIN " + query["sql"])
                for (line,) in cursor.fetchall():
                    found = re.search(r"Seq Scan on (\w+)", line)
                    if found and found.group(1) in LARGE_TABLES:
                        scans.add(found.group(1))
        return sorted(scans)

    def timed(client: Client, url: str, expect: str | None) -> dict:
        for _ in range(3):  # warm: connection, caches, plans
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
        if expect is not None:
            assert expect in response.text, (url, expect)
        seconds = []
        for _ in range(requests):
            began = time.perf_counter()
            client.get(url)
            seconds.append(time.perf_counter() - began)
        with CaptureQueriesContext(connection) as captured:
            client.get(url)
        slowest = max(captured.captured_queries, key=lambda q: float(q["time"]))
        seconds.sort()
        return {
            "p50_ms": round(statistics.median(seconds) * 1000, 1),
            "p95_ms": round(seconds[max(round(0.95 * len(seconds)) - 1, 0)] * 1000, 1),
            "max_ms": round(seconds[-1] * 1000, 1),
            "queries": len(captured.captured_queries),
            "slowest_query_ms": round(float(slowest["time"]) * 1000, 1),
            "slowest_query": slowest["sql"][:160],
            "large_table_seq_scans": large_table_scans(captured.captured_queries),
        }

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM activation_activationcase")
        cases = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM activation_caseevent")
        events = cursor.fetchone()[0]
    result: dict = {"cases": cases, "events": events}
    expected = {"search_phone": "139****0042", "case_page_200_events": "Called the customer 200"}
    for who, username in (("view_pii", "bench-agent-pii"), ("masked", "bench-agent")):
        client = signed_in(username)
        result[who] = {
            name: timed(client, url, expected.get(name))
            for name, url in pages(long_case_id).items()
        }
    return result


def measure_in_child(env: dict[str, str], requests: int, long_case_id: int) -> dict:
    return surge.json_from_child(
        [
            "-m",
            "bench.backoffice",
            "--measure",
            "--requests",
            str(requests),
            "--long-case",
            str(long_case_id),
        ],
        env,
    )


def staff_in_child(env: dict[str, str]) -> list[int]:
    return surge.json_from_child(["-m", "bench.backoffice", "--create-staff"], env)["ids"]


def summary(small: dict, large: dict) -> dict:
    """Per page and viewer: p95 small → large, the ratio, the query counts, and the verdict."""
    rows = {}
    for who in ("view_pii", "masked"):
        for page, figures in large[who].items():
            base = small[who][page]
            rows[f"{who}:{page}"] = {
                "p50_ms": [base["p50_ms"], figures["p50_ms"]],
                "p95_ms": [base["p95_ms"], figures["p95_ms"]],
                "p95_ratio": round(figures["p95_ms"] / base["p95_ms"], 2),
                "queries": [base["queries"], figures["queries"]],
                "p95_under_target": figures["p95_ms"] < TARGET_P95_MS,
            }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=30, help="per page, after warm-up")
    parser.add_argument("--keep-db", action="store_true", help="leave the database for a look")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--create-staff", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--long-case", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.create_staff:
        print(json.dumps({"ids": create_staff()}))
        return
    if options.measure:
        print(json.dumps(measure(options.requests, options.long_case)))
        return

    workdir = ROOT / "var" / "bench-backoffice"
    workdir.mkdir(parents=True, exist_ok=True)
    env = environment(workdir)
    env[PASSWORD_VARIABLE] = secrets.token_urlsafe(16)
    create_database(env)
    try:
        staff = staff_in_child(env)
        filler = EVENTS_PER_CASE - 2  # besides the opening and the outcome
        monitoring.fill(
            1, SMALL, filler, database=DB_NAME, risk_levels=RISK_LEVELS, assignees=staff
        )
        long_case = lengthen_one_case()
        small = measure_in_child(env, options.requests, long_case)
        print("small:", json.dumps(small), flush=True)
        print(f"growing to {options.cases} cases …", flush=True)
        began = time.perf_counter()
        with events_indexed_afterwards():
            monitoring.fill(
                SMALL + 1,
                options.cases - SMALL,
                filler,
                database=DB_NAME,
                risk_levels=RISK_LEVELS,
                assignees=staff,
            )
        print(f"filled in {time.perf_counter() - began:.0f} s", flush=True)
        large = measure_in_child(env, options.requests, long_case)
        print("large:", json.dumps(large), flush=True)
    finally:
        if not options.keep_db:
            drop_database()
    result = {
        "machine": {"cores": os.cpu_count()},
        "requests_per_page": options.requests,
        "target_p95_ms": TARGET_P95_MS,
        "summary": summary(small, large),
        "small": small,
        "large": large,
    }
    (ROOT / "var" / "bench-backoffice.json").write_text(json.dumps(result, indent=2))
    print(f"{'viewer:page':40} {'p50 ms':>15} {'p95 ms':>15} {'ratio':>6} {'queries':>8}  <300")
    for name, row in result["summary"].items():
        p50, p95, queries = row["p50_ms"], row["p95_ms"], row["queries"]
        print(
            f"{name:40} {p50[0]:>6} → {p50[1]:>6} {p95[0]:>6} → {p95[1]:>6}"
            f" {row['p95_ratio']:>6} {queries[0]:>3} → {queries[1]:<3}  {row['p95_under_target']}"
        )


if __name__ == "__main__":
    main()
