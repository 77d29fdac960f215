"""Export benchmark: the CSV export of 1,000,000 events against PostgreSQL's own COPY.

    python -m bench.export --events 1000000

Fills a fresh database with cases of 20 events each (in SQL, so the fill is quick), then in the
same run measures (a) ``COPY (SELECT the same columns) TO STDOUT WITH CSV`` and (b) the portal's
CSV export (``manage.py export_case_history``) in a child process, reporting throughput and the
child's peak RSS.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "activation_rescue_bench_export"
PG = "postgres://postgres@127.0.0.1:5432"

COPY_QUERY = """
COPY (
  SELECT e.case_id, e.seq, l.reference, u.customer_reference, u.first_name || ' ' || u.last_name,
         u.phone_number, e.actor_type, a.username, e.created_at, e.kind, e.state_before,
         e.state_after, e.data, e.ip_address, e.device_id, e.prev_hash, e.hash
  FROM activation_caseevent e
  JOIN activation_activationcase c ON c.id = e.case_id
  JOIN activation_creditline l ON l.id = c.credit_line_id
  JOIN accounts_user u ON u.id = l.customer_id
  LEFT JOIN accounts_user a ON a.id = e.actor_id
  ORDER BY e.case_id, e.seq
) TO STDOUT WITH CSV HEADER
"""


def fill(env: dict[str, str], events: int, per_case: int = 20) -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    cases = events // per_case
    with psycopg.connect(f"{PG}/{DB_NAME}", autocommit=True) as db:
        db.execute(
            "INSERT INTO accounts_user (password, is_superuser, username, first_name, last_name,"
            " email, is_staff, is_active, date_joined, phone_number, customer_reference,"
            " preferred_language) SELECT '!', false, 'c' || n, 'Wei', 'Zhang', '', false, true,"
            " now(), '+86139' || lpad(n::text, 8, '0'), 'C-' || n, ''"
            " FROM generate_series(1, %s) n",
            [cases],
        )
        db.execute(
            "INSERT INTO activation_creditline (customer_id, reference, product_name, credit_limit,"
            " status, core_version, core_activation_id, created_at)"
            " SELECT id, 'CL-' || id, 'Installment Plus', 1000, 'active', 1, '', now()"
            " FROM accounts_user"
        )
        db.execute(
            "INSERT INTO activation_activationcase (credit_line_id, state, failure_reason,"
            " failure_detail, risk_level, retry_count, opened_at, state_changed_at)"
            " SELECT id, 'activated', '', '', 'low', 1, now(), now() FROM activation_creditline"
        )
        db.execute(
            "INSERT INTO activation_caseevent (case_id, seq, kind, actor_type, state_before,"
            " state_after, data, device_id, user_agent, created_at, prev_hash, hash)"
            " SELECT c.id, s, 'state.changed', 'system', 'submitting', 'activated',"
            " jsonb_build_object('reason', '', 'step', s), '', '', now(), repeat('0', 64),"
            " md5(c.id || ':' || s) || md5(s || ':' || c.id)"
            " FROM activation_activationcase c, generate_series(1, %s) s",
            [per_case],
        )
        db.execute("ANALYZE")


def measure_copy() -> dict:
    with psycopg.connect(f"{PG}/{DB_NAME}") as db, db.cursor() as cursor:
        began = time.perf_counter()
        size = 0
        with cursor.copy(COPY_QUERY) as copy:
            for block in copy:
                size += len(block)
        seconds = time.perf_counter() - began
    return {"seconds": round(seconds, 2), "bytes": size}


def measure_export(env: dict[str, str], workdir: Path) -> dict:
    output = workdir / "export.csv"
    # A fresh parent for the export alone, so its peak RSS is not mixed with the fill's.
    probe = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], check=True, stderr=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    command = [
        sys.executable,
        "manage.py",
        "export_case_history",
        "--output",
        str(output),
        "--manifest",
        str(workdir / "export.manifest.json"),
    ]
    began = time.perf_counter()
    finished = subprocess.run(
        [sys.executable, "-c", probe, *command],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - began
    peak_kib = int(finished.stdout.split()[-1])
    return {
        "seconds": round(seconds, 2),
        "bytes": output.stat().st_size,
        "peak_rss_mb": round(peak_kib / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    options = parser.parse_args()
    workdir = ROOT / "var" / "bench-export"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TEST_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        DATABASE_URL=f"{PG}/{DB_NAME}",
        PORTAL_VAR_DIR=str(workdir),
        LOG_LEVEL="WARNING",
    )
    print(f"filling {options.events} events …", flush=True)
    fill(env, options.events)
    copy = measure_copy()
    print("COPY:", copy, flush=True)
    export = measure_export(env, workdir)
    print("export:", export, flush=True)
    result = {
        "machine": {"cores": os.cpu_count()},
        "events": options.events,
        "copy": {**copy, "rows_per_s": round(options.events / copy["seconds"])},
        "export": {**export, "rows_per_s": round(options.events / export["seconds"])},
        "throughput_ratio_export_to_copy": round(copy["seconds"] / export["seconds"], 3),
    }
    (ROOT / "var" / "bench-export.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
