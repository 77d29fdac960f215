"""Export benchmark: CSV, JSON Lines and XLSX exports of 1,000,000 events against PostgreSQL's COPY.

    python -m bench.export --events 1000000

Fills a fresh database with cases of 20 events each (in SQL, so the fill is quick; one case in
ten is under review), then in the same run measures (a) ``COPY (SELECT the same columns) TO
STDOUT WITH CSV`` and (b) the portal's export (``manage.py export_case_history``) in each format,
each in a child process of its own, reporting throughput against COPY and the child's peak RSS.
XLSX is measured twice, on the cases under review (a tenth of the events) and on all of them,
and CSV on the tenth too: XLSX's memory must not grow with the rows.
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
            " SELECT id, CASE WHEN id % 10 = 0 THEN 'needs_review' ELSE 'activated' END, '', '',"
            " 'low', 1, now(), now() FROM activation_creditline"
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


def measure_export(env: dict[str, str], workdir: Path, fmt: str, *options: str) -> dict:
    output = workdir / f"export.{fmt}"
    # A fresh parent for the export alone, so its peak RSS is not mixed with the fill's.
    probe = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], check=True, stderr=subprocess.DEVNULL); "
        "usage = resource.getrusage(resource.RUSAGE_CHILDREN); "
        "print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime)"
    )
    command = [
        sys.executable,
        "manage.py",
        "export_case_history",
        "--format",
        fmt,
        "--output",
        str(output),
        "--manifest",
        str(workdir / f"export.{fmt}.manifest.json"),
        *options,
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
    peak_kib, cpu_seconds = finished.stdout.split()[-2:]
    rows = json.loads((workdir / f"export.{fmt}.manifest.json").read_text())["rows"]
    size = output.stat().st_size
    output.unlink()
    return {
        "seconds": round(seconds, 2),
        "rows": rows,
        "bytes": size,
        "peak_rss_mb": round(int(peak_kib) / 1024, 1),
        # The export process's own CPU (PostgreSQL's is not in it): steadier than the wall
        # time on a shared machine, and it includes Django's start-up.
        "cpu_seconds": round(float(cpu_seconds), 2),
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
    runs = {
        "csv": ("csv",),
        "jsonl": ("jsonl",),
        # The same tenth as CSV too: what the manifest's chain heads add to the peak RSS grows
        # with the cases in every format, so XLSX's own memory is its excess over CSV's.
        "csv_tenth": ("csv", "--state", "needs_review"),
        "xlsx_tenth": ("xlsx", "--state", "needs_review"),
        "xlsx": ("xlsx",),
    }
    exports = {}
    copy_rows_per_s = options.events / copy["seconds"]
    for name, (fmt, *arguments) in runs.items():
        export = measure_export(env, workdir, fmt, *arguments)
        # Throughput against COPY's, both in rows per second.
        export["rows_per_s"] = round(export["rows"] / export["seconds"])
        export["throughput_ratio_to_copy"] = round(export["rows_per_s"] / copy_rows_per_s, 3)
        print(f"{name}:", export, flush=True)
        exports[name] = export
    result = {
        "machine": {"cores": os.cpu_count()},
        "events": options.events,
        "copy": {**copy, "rows_per_s": round(copy_rows_per_s)},
        "exports": exports,
    }
    (ROOT / "var" / "bench-export.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
