"""Export benchmark: CSV, JSON Lines and XLSX exports of 1,000,000 events against PostgreSQL's COPY.

    python -m bench.export --events 1000000

Fills a fresh database with cases of 20 events each (in SQL, so the fill is quick; one case in
ten is under review), then in the same run measures (a) ``COPY (SELECT the same columns) TO
STDOUT WITH CSV`` read through psycopg and (b) the portal's export (the ``export_case_history``
command, which writes the file and its manifest) in each format, each in a child process of its
own, reporting throughput against COPY and the child's peak RSS. XLSX is measured twice, on the
cases under review (a tenth of the events) and on all of them, and CSV on the tenth too: XLSX's
memory must not grow with the rows.

Each export is timed twice over:

- *in process* (``seconds``, ``ratio_to_copy``): the child starts Django and opens its database
  connection, as a running web process already has, and only then starts the clock around the
  command, which stops when the file and the manifest are written. This is what an export
  through the back office or the API costs, and the figure the targets are about;
- *with start-up* (``seconds_with_startup``, ``ratio_to_copy_with_startup``): the whole child,
  Python's and Django's start-up included (about 2 s of CPU), as the command line pays it.

``--keep`` reuses a database filled by an earlier run with the same ``--events`` (``--formats``
picks some of the exports), so that two versions of the export code can be compared on the same
data, each against a COPY measured just before it.
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
RUNS = {
    "csv": ("csv",),
    "jsonl": ("jsonl",),
    # The same tenth as CSV too: what the manifest's chain heads add to the peak RSS grows with
    # the cases in every format, so XLSX's own memory is its excess over CSV's.
    "csv_tenth": ("csv", "--state", "needs_review"),
    "xlsx_tenth": ("xlsx", "--state", "needs_review"),
    "xlsx": ("xlsx",),
}


def filled_events(database: str) -> int | None:
    """The events in ``database`` if a run filled it, else None."""
    try:
        with psycopg.connect(f"{PG}/{database}") as db:
            return db.execute("SELECT count(*) FROM activation_caseevent").fetchone()[0]
    except psycopg.Error:
        return None


def fill(env: dict[str, str], database: str, events: int, per_case: int = 20) -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {database}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    cases = events // per_case
    with psycopg.connect(f"{PG}/{database}", autocommit=True) as db:
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
        db.execute("VACUUM ANALYZE")


def measure_copy(database: str) -> dict:
    with psycopg.connect(f"{PG}/{database}") as db, db.cursor() as cursor:
        began = time.perf_counter()
        size = 0
        with cursor.copy(COPY_QUERY) as copy:
            for block in copy:
                size += len(block)
        seconds = time.perf_counter() - began
    return {"seconds": round(seconds, 2), "bytes": size}


def export_in_process() -> None:
    """The child: start Django, connect, then time the command alone (arguments in argv)."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from activation.management.commands import export_case_history  # noqa: F401 (as a server)

    # A web process has its connection already (CONN_MAX_AGE); the export's own queries count.
    connection.ensure_connection()
    began, cpu = time.perf_counter(), time.process_time()
    call_command("export_case_history", *sys.argv[1:])
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds}), flush=True)


# A fresh parent for the export alone, so that its peak RSS is not mixed with the fill's.
PROBE = (
    "import resource, subprocess, sys; "
    "subprocess.run(sys.argv[1:], check=True, stderr=subprocess.DEVNULL); "
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime)"
)
CHILD = "from bench.export import export_in_process; export_in_process()"


def measure_export(env: dict[str, str], workdir: Path, fmt: str, *options: str) -> dict:
    output = workdir / f"export.{fmt}"
    manifest = workdir / f"export.{fmt}.manifest.json"
    command = [sys.executable, "-c", CHILD, "--format", fmt, "--output", str(output)]
    command += ["--manifest", str(manifest), *options]
    began = time.perf_counter()
    finished = subprocess.run(
        [sys.executable, "-c", PROBE, *command],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    seconds_with_startup = time.perf_counter() - began
    *_, in_process, usage = finished.stdout.splitlines()
    in_process = json.loads(in_process)
    peak_kib, cpu_seconds = usage.split()
    rows = json.loads(manifest.read_text())["rows"]
    size = output.stat().st_size
    output.unlink()
    return {
        "rows": rows,
        "bytes": size,
        "seconds": round(in_process["seconds"], 2),
        "seconds_with_startup": round(seconds_with_startup, 2),
        "peak_rss_mb": round(int(peak_kib) / 1024, 1),
        # The export process's own CPU (PostgreSQL's is not in it): steadier than the wall time
        # on a shared machine. The whole child's includes Python's and Django's start-up.
        "cpu_seconds": round(in_process["cpu_seconds"], 2),
        "cpu_seconds_with_startup": round(float(cpu_seconds), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--database", default=DB_NAME, help="dropped and filled (see --keep)")
    parser.add_argument(
        "--keep", action="store_true", help="reuse the database if it holds --events events"
    )
    parser.add_argument(
        "--formats", default=",".join(RUNS), help=f"some of {','.join(RUNS)} (comma-separated)"
    )
    options = parser.parse_args()
    names = options.formats.split(",")
    if not set(names) <= set(RUNS):
        parser.error(f"--formats takes some of {','.join(RUNS)}")
    workdir = ROOT / "var" / "bench-export"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TEST_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        DATABASE_URL=f"{PG}/{options.database}",
        PORTAL_VAR_DIR=str(workdir),
        LOG_LEVEL="WARNING",
    )
    if options.keep and filled_events(options.database) == options.events:
        print(f"reusing {options.database} ({options.events} events)", flush=True)
    else:
        print(f"filling {options.events} events …", flush=True)
        fill(env, options.database, options.events)
    copy = measure_copy(options.database)
    print("COPY:", copy, flush=True)
    exports = {}
    copy_rows_per_s = options.events / copy["seconds"]
    for name in names:
        fmt, *arguments = RUNS[name]
        export = measure_export(env, workdir, fmt, *arguments)
        # Throughput against COPY's, both in rows per second.
        for suffix in ("", "_with_startup"):
            rows_per_s = export["rows"] / export[f"seconds{suffix}"]
            export[f"ratio_to_copy{suffix}"] = round(rows_per_s / copy_rows_per_s, 3)
        print(f"{name}:", export, flush=True)
        exports[name] = export
    result = {
        "machine": {"cores": os.cpu_count(), "load_average": os.getloadavg()},
        "events": options.events,
        "copy": {**copy, "rows_per_s": round(copy_rows_per_s)},
        "exports": exports,
    }
    (ROOT / "var" / "bench-export.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
