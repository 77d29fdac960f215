"""Statements benchmark: the SQL statements and transactions one activation costs, step by step.

Walks customers one at a time through a whole visit in this process, as the fleet run does it
through its web servers and workers: the sign-in page, the sign-in, the case list, "send me a
code", the code, the delivery to the core (the Celery task's function, called directly), for a
pending answer the core's signed callback, and the "activated" message. The core simulator runs
in a thread. Each step's statements are captured on Django's connection and grouped by table and
kind; its transactions are counted as the driver sees them begin (an autocommit statement is one,
as PgBouncer and ``pg_stat_database`` count it). Usage (PostgreSQL and Redis required; it
creates and drops the database ``ar_stmts_bench`` and uses Redis db 7):

    python -m bench.statements --customers 3
"""

import argparse
import collections
import cProfile
import json
import os
import pstats
import re
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import surge

DB_NAME = "ar_stmts_bench"
REDIS_DB = 7
HOST = "localhost"
# The share of activations the fleet's core answers "pending" and confirms by callback.
PENDING_SHARE = 0.3
# The settling steps' profiler (``--profile``), or None.
PROFILE: cProfile.Profile | None = None


def environment(workdir: Path) -> dict[str, str]:
    """The surge benchmark's production-like settings, on this benchmark's database and Redis db."""
    env = surge.environment_on(
        workdir, database=DB_NAME, redis_db=REDIS_DB, hosts=f"{HOST},127.0.0.1"
    )
    # Nothing is consumed from the broker: the tasks' functions are called directly.
    env.update(CELERY_TASK_ALWAYS_EAGER="false")
    return env


# Django logs these around a transaction (``debug_transaction``) whether or not the driver sent
# them: psycopg sends BEGIN only before a transaction's first statement, and nothing for the
# COMMIT of a transaction that never began. They are counted from the transactions instead.
TRANSACTION_MARKERS = frozenset({"BEGIN", "COMMIT", "ROLLBACK"})


@dataclass
class Step:
    """What one step sent to PostgreSQL."""

    statements: list[str] = field(default_factory=list)  # SQL, savepoints included
    transactions: int = 0
    opened: int = 0  # of them, begun by BEGIN (and ended by COMMIT): two statements more each
    cpu_ms: float = 0.0  # CPU of this thread (the web process's or the worker's share)
    database_cpu_ms: float = 0.0  # CPU of the connection's PostgreSQL backend
    wall_ms: float = 0.0  # time on the clock, waits included

    @property
    def sent(self) -> int:
        """Statements as PgBouncer counts them: the SQL, and each transaction's BEGIN, COMMIT."""
        return len(self.statements) + 2 * self.opened


@contextmanager
def counting(connection, *, settles: bool = False):
    """Capture the statements run on ``connection`` and count the transactions they began.

    A statement begins a transaction when the connection is in autocommit (it is one) or when
    the driver is idle outside a transaction (psycopg sends BEGIN before it); the COMMIT that
    ends it goes through no cursor, so it is not counted twice.
    """
    from django.test.utils import CaptureQueriesContext
    from psycopg.pq import TransactionStatus

    step = Step()

    def wrapper(execute, sql, params, many, context):
        raw = connection.connection
        if raw.autocommit:
            step.transactions += 1
        elif raw.info.transaction_status == TransactionStatus.IDLE:
            step.transactions += 1
            step.opened += 1
        return execute(sql, params, many, context)

    profiling = PROFILE is not None and settles
    backend_before = backend_cpu_seconds(connection)
    with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(wrapper):
        if profiling:
            PROFILE.enable()
        started, clock = time.thread_time(), time.perf_counter()
        try:
            yield step
        finally:
            step.cpu_ms = (time.thread_time() - started) * 1000
            step.wall_ms = (time.perf_counter() - clock) * 1000
            if profiling:
                PROFILE.disable()
    step.database_cpu_ms = (backend_cpu_seconds(connection) - backend_before) * 1000
    step.statements = [
        query["sql"]
        for query in captured.captured_queries
        if query["sql"] not in TRANSACTION_MARKERS
    ]


def backend_cpu_seconds(connection) -> float:
    """CPU seconds used so far by the PostgreSQL backend serving ``connection`` (from /proc).

    Read in clock ticks (10 ms here): one step's figure is coarse, the mean over many is not
    biased. The backend's pid is asked once per connection, outside any step's count.
    """
    raw = connection.connection
    if raw is None:
        return 0.0
    pid = BACKENDS.get(id(raw))
    if pid is None:
        pid = BACKENDS[id(raw)] = raw.info.backend_pid
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:  # not on this machine, or it ended
        return 0.0
    return (int(fields[11]) + int(fields[12])) / surge.CLOCK_TICKS


BACKENDS: dict[int, int] = {}


# --- statement shapes --------------------------------------------------------------------------

LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")
IN_LISTS = re.compile(r"IN \((?:\?, )+\?\)")
TABLE = re.compile(r'(?:FROM|INTO|UPDATE)\s+"?([a-z_0-9]+)"?', re.IGNORECASE)


def shape(sql: str) -> str:
    """The statement with its values taken out, so repeats of one query count together."""
    text = IN_LISTS.sub("IN (…)", LITERALS.sub("?", sql))
    return re.sub(r"\s+", " ", text).strip()


def kind_and_table(sql: str) -> tuple[str, str]:
    words = sql.lstrip().split(None, 1)
    kind = words[0].upper() if words else "?"
    if kind in ("SAVEPOINT", "RELEASE", "ROLLBACK"):
        return "SAVEPOINT", "-"
    found = TABLE.search(sql)
    return kind, found.group(1) if found else "-"


def short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def describe(statement: str) -> str:
    """A repeated shape, shortened: its kind, its table and what it filters or sets on."""
    kind, table = kind_and_table(statement)
    if kind == "SAVEPOINT":
        return statement.split()[0].upper()
    where = re.search(r"\bWHERE (.*?)(?: ORDER BY| LIMIT| FOR UPDATE|$)", statement)
    filters = re.sub(r'"[a-z_0-9]+"\."', "", where.group(1)).replace('"', "") if where else ""
    if kind == "UPDATE":
        setting = re.search(r"\bSET (.*?) WHERE", statement)
        columns = re.findall(r'"([a-z_0-9]+)" =', setting.group(1)) if setting else []
        filters = "set " + ",".join(columns)
    locked = " FOR UPDATE" if "FOR UPDATE" in statement else ""
    return short(f"{kind} {table}{locked} {filters}".strip(), 70)


# --- one customer's visit ----------------------------------------------------------------------


@dataclass
class Visit:
    """The statements and transactions of each step of one customer's visit."""

    steps: dict[str, Step] = field(default_factory=dict)


def last_code(phone: str) -> str:
    from verification.sms import LocmemBackend

    messages = [m for m in LocmemBackend.outbox if m["to"] == phone]
    return re.search(r"\b(\d{6})\b", messages[-1]["body"]).group(1)


def signed_callback(simulator, reference: str) -> tuple[bytes, dict[str, str]]:
    """The callback the simulator would send for ``reference`` now, signed as it signs it."""
    line = simulator.stats()["lines"][reference]
    data = {
        "activation_id": line["activation_id"],
        "credit_line_ref": reference,
        "status": line["status"],
        "reason": None,
        "version": line["version"],
    }
    message_id = f"msg_{uuid.uuid4().hex[:24]}"
    body = json.dumps(
        {"id": f"evt_{uuid.uuid4().hex}", "type": "activation.succeeded", "data": data}
    )
    now = datetime.now(UTC)
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": simulator.webhook.sign(message_id, now, body),
    }
    return body.encode(), headers


def visit(index: int, simulator, *, pending: bool) -> Visit:
    """Walk customer ``bench{index}`` through one activation; the core answers 201 or 202."""
    from django.db import connection
    from django.test import Client

    from activation.models import ActivationCase, CaseState, CoreRequest
    from activation.tasks import deliver_core_request, notify_case_resolved

    client = Client(HTTP_HOST=HOST, REMOTE_ADDR=f"10.7.{index // 250}.{index % 250 + 1}")
    # The core's client too; each loads its middleware (WhiteNoise scans the static files: some
    # 50 ms) before anything is counted, as a server does once per process.
    callback = Client(HTTP_HOST=HOST)
    for each in (client, callback):
        each.get("/healthz")
    result = Visit()

    def expect(response, status: int, what: str) -> None:
        if response.status_code != status:
            raise SystemExit(f"bench{index}: {what} answered {response.status_code}")

    with counting(connection) as result.steps["GET /accounts/login/"]:
        expect(client.get("/accounts/login/"), 200, "the sign-in page")
    with counting(connection) as result.steps["POST sign-in"]:
        data = {"username": f"bench{index}", "password": surge.PASSWORD}
        expect(client.post("/accounts/login/", data), 302, "the sign-in")
    with counting(connection) as result.steps["GET /activation/"]:
        listing = client.get("/activation/")
        expect(listing, 200, "the case list")
    case_id = int(re.search(r"/activation/(\d+)/retry/", listing.content.decode()).group(1))
    retry = f"/activation/{case_id}/retry/"
    with counting(connection) as result.steps["POST send code (sms)"]:
        expect(client.post(retry, {"action": "send", "channel": "sms"}), 302, "send code")
    phone = f"+86139{index:08d}"
    data = {"action": "verify", "code": last_code(phone), "submission_id": str(uuid.uuid4())}
    with counting(connection, settles=True) as result.steps["POST verify"]:
        expect(client.post(retry, data), 302, "the code")
    request_id = CoreRequest.objects.filter(case_id=case_id).latest("pk").pk

    simulator.config.script = ["pending" if pending else "active"]
    with counting(connection, settles=True) as result.steps["task deliver_core_request"]:
        deliver_core_request.run(request_id)
    if pending:
        reference = ActivationCase.objects.get(pk=case_id).credit_line.reference
        deadline = time.monotonic() + 5
        while simulator.stats()["lines"][reference]["status"] != "active":
            if time.monotonic() > deadline:
                raise SystemExit(f"bench{index}: the core never confirmed")
            time.sleep(0.02)
        body, headers = signed_callback(simulator, reference)
        with counting(connection, settles=True) as result.steps["POST core callback"]:
            answer = callback.post(
                "/api/v1/core/events/", body, content_type="application/json", headers=headers
            )
            expect(answer, 200, "the core's callback")
    if ActivationCase.objects.get(pk=case_id).state != CaseState.ACTIVATED:
        raise SystemExit(f"bench{index}: the case did not end activated")
    with counting(connection, settles=True) as result.steps["task notify_case_resolved"]:
        notify_case_resolved.run(case_id)
    return result


def background() -> dict[str, Step]:
    """One run of each periodic job and health check the fleet runs, with nothing to do."""
    from django.db import connection
    from django.test import Client

    from activation.tasks import reconcile_activations, sweep_core_outbox

    runs = {}
    for name, run in (
        ("periodic sweep_core_outbox", sweep_core_outbox.run),
        ("periodic reconcile_activations", reconcile_activations.run),
        ("GET /healthz", lambda: Client(HTTP_HOST=HOST).get("/healthz")),
        ("GET /readyz", lambda: Client(HTTP_HOST=HOST).get("/readyz")),
    ):
        with counting(connection) as counted:
            run()
        runs[name] = counted
    return runs


def bare_requests(count: int) -> list[Step]:
    """The CPU baseline: ``count`` bare INSERT requests (``/_bench/insert``), as the surge's."""
    from django.db import connection
    from django.test import Client

    client = Client(HTTP_HOST=HOST)
    steps = []
    for _ in range(count):
        with counting(connection) as step:
            if client.post("/_bench/insert").status_code != 200:
                raise SystemExit("the bare INSERT view did not answer 200")
        steps.append(step)
    return steps


def floor_activations(customers: int) -> list[Step]:
    """The floor activation (``bench/tasks.py``) once per customer, each step counted.

    Each customer signs in again (not counted) and POSTs to ``/_bench/floor-submit``; the
    floor's two tasks are then run here as the visit's are. One step per floor activation.
    """
    from django.db import connection
    from django.test import Client

    from bench.tasks import floor_delivery, floor_message

    steps = []
    for index in range(customers):
        client = Client(HTTP_HOST=HOST, REMOTE_ADDR=f"10.9.{index // 250}.{index % 250 + 1}")
        client.get("/healthz")
        data = {"username": f"bench{index}", "password": surge.PASSWORD}
        if client.post("/accounts/login/", data).status_code != 302:
            raise SystemExit(f"bench{index}: the sign-in for the floor failed")
        client.get("/accounts/login/")  # the CSRF cookie
        token = client.cookies["csrftoken"].value
        with counting(connection) as step:
            answer = client.post("/_bench/floor-submit", {"csrfmiddlewaretoken": token})
            if answer.status_code != 302:
                raise SystemExit(f"the floor submit answered {answer.status_code}")
            floor_delivery.run()
            floor_message.run()
        steps.append(step)
    return steps


def first_case_id() -> int:
    from activation.models import ActivationCase

    return ActivationCase.objects.order_by("pk").values_list("pk", flat=True)[0]


def orm_statement_cost(case_id: int, repeats: int = 300) -> dict[str, dict[str, float]]:
    """CPU (ms, this thread) of one statement through Django's ORM and of the same SQL sent raw.

    Three shapes the settling steps are made of: a case read with its credit line, an UPDATE
    of one case, an INSERT of one row. Run in a transaction that is rolled back; the minimum of
    five rounds of ``repeats`` each. What the ORM adds per statement, before any of our logic,
    is the part of an activation's CPU that fewer statements would save and nothing else would.
    """
    from django.db import connection, transaction
    from django.db.models import F

    from activation.models import ActivationCase, CodeSubmission

    def read() -> None:
        ActivationCase.objects.select_related("credit_line").get(pk=case_id)

    def update() -> None:
        ActivationCase.objects.filter(pk=case_id).update(retry_count=F("retry_count"))

    def insert() -> None:
        CodeSubmission.objects.create(case_id=case_id, submission_id=uuid.uuid4(), result="x")

    read_sql = ActivationCase.objects.select_related("credit_line").filter(pk=case_id).query
    update_sql = (
        'UPDATE "activation_activationcase" SET "retry_count" = "activation_activationcase".'
        '"retry_count" WHERE "activation_activationcase"."id" = %s'
    )
    insert_sql = (
        'INSERT INTO "activation_codesubmission" ("case_id", "submission_id", "result", '
        '"created_at") VALUES (%s, %s, %s, %s) RETURNING "activation_codesubmission"."id"'
    )
    sql, params = read_sql.sql_with_params()

    def raw(statement: str, arguments) -> Callable[[], None]:
        def run() -> None:
            with connection.cursor() as cursor:
                cursor.execute(statement, arguments() if callable(arguments) else arguments)
                if cursor.description:
                    cursor.fetchall()

        return run

    shapes = {
        "SELECT a case and its line": (read, raw(sql, params)),
        "UPDATE a case": (update, raw(update_sql, [case_id])),
        "INSERT a row": (
            insert,
            raw(insert_sql, lambda: [case_id, uuid.uuid4(), "x", datetime.now(UTC)]),
        ),
    }
    figures = {}
    with transaction.atomic():
        for name, (orm, plain) in shapes.items():
            timings = {}
            for label, run in (("orm", orm), ("raw", plain)):
                best = float("inf")
                for _round in range(5):
                    started = time.thread_time()
                    for _ in range(repeats):
                        run()
                    best = min(best, (time.thread_time() - started) * 1000 / repeats)
                timings[label] = round(best, 3)
            figures[name] = timings
        transaction.set_rollback(True)
    return figures


# The steps after the code is typed, which settle an activation (the surge's burst phase).
SETTLING = ("POST verify", "task deliver_core_request", "POST core callback",
            "task notify_case_resolved")  # fmt: skip


def cpu_report(
    instant: list[Visit], pending: list[Visit], bare: list[Step], floors: list[Step]
) -> dict:
    """CPU per step (this thread, and its PostgreSQL backend), warm, against a bare request.

    In-process figures: no HTTP server, no Celery (the tasks' functions are called directly) and
    no simulator (its thread is not counted), so they are the work itself, a floor under what the
    surge benchmark measures across processes. The bare request's figure is the median of
    ``--bare`` requests, each step's the mean over the warm customers.
    """

    def cpu(steps: list[Step]) -> tuple[float, float]:
        return (
            statistics.mean(s.cpu_ms for s in steps),
            statistics.mean(s.database_cpu_ms for s in steps),
        )

    baseline = (
        statistics.median(s.cpu_ms for s in bare),
        statistics.mean(s.database_cpu_ms for s in bare),
    )
    print(
        "\n### CPU per step, warm (ms: this process / its PostgreSQL backend; "
        "in brackets the time on the clock, waits included)\n"
    )
    print("| step | 201 path | 202 path |\n|---|---:|---:|")
    names = list(dict.fromkeys(n for v in instant[1:] + pending[1:] for n in v.steps))
    figures: dict = {"bare INSERT request": baseline}
    for name in names:
        cells, shown = [], []
        for visits in (instant[1:] or instant, pending[1:] or pending):
            steps = [v.steps[name] for v in visits if name in v.steps]
            cells.append(cpu(steps) if steps else None)
            wall = statistics.mean(s.wall_ms for s in steps) if steps else 0
            shown.append(f"{cells[-1][0]:.2f} / {cells[-1][1]:.2f} ({wall:.0f})" if steps else "—")
        figures[name] = cells
        print(f"| {name} | {shown[0]} | {shown[1]} |")
    print(f"| bare INSERT request (baseline) | {baseline[0]:.2f} / {baseline[1]:.2f} | |")
    steps_floor = cpu(floors[1:] or floors)
    print(
        f"| floor activation (`bench/tasks.py`: signed-in submit, delivery, message) "
        f"| {steps_floor[0]:.2f} / {steps_floor[1]:.2f} | |"
    )

    def settled(index: int) -> float:
        return sum(sum(figures[n][index]) for n in SETTLING if n in figures and figures[n][index])

    per_activation = (1 - PENDING_SHARE) * settled(0) + PENDING_SHARE * settled(1)
    ratio = per_activation / sum(baseline)
    print(
        f"\nsettling an activation ({', '.join(SETTLING)}; {PENDING_SHARE:.0%} by callback): "
        f"{per_activation:.1f} ms of CPU in this process and PostgreSQL = "
        f"{ratio:.1f} × a bare request ({sum(baseline):.2f} ms); the floor activation "
        f"{sum(steps_floor) / sum(baseline):.1f} × (no Celery, HTTP server or core in either)"
    )
    return {"steps": figures, "per_settled_activation_ms": round(per_activation, 2),
            "ratio_to_bare": round(ratio, 2), "floor_activation": steps_floor,
            "floor_ratio_to_bare": round(sum(steps_floor) / sum(baseline), 2)}  # fmt: skip


# --- the report -------------------------------------------------------------------------------


def top_shapes(steps: list[Step], count: int = 3) -> str:
    """The ``count`` shapes repeated most within one visit's step, with their mean repeats."""
    shapes = collections.Counter(shape(sql) for step in steps for sql in step.statements)
    repeated = [(s, n / len(steps)) for s, n in shapes.most_common(count)]
    return "; ".join(f"{n:g}× {describe(s)}" for s, n in repeated)


def by_table(steps: list[Step]) -> list[tuple[str, str, float]]:
    counts = collections.Counter(kind_and_table(sql) for step in steps for sql in step.statements)
    return [(kind, table, n / len(steps)) for (kind, table), n in counts.most_common()]


def mean(values: list[float]) -> float:
    return round(statistics.mean(values), 1) if values else 0.0


def table(visits: list[Visit], *, skip_first: bool) -> tuple[list[str], dict[str, dict]]:
    """The Markdown table of per-step averages, and those averages by step."""
    counted = visits[1:] if skip_first and len(visits) > 1 else visits
    names = list(dict.fromkeys(name for v in counted for name in v.steps))
    lines = [
        "| step | statements | transactions | the 3 most repeated statement shapes | SQL | "
        "of it SAVEPOINT |",
        "|---|---:|---:|---|---:|---:|",
    ]
    figures = {}
    for name in names:
        steps = [v.steps[name] for v in counted if name in v.steps]
        figures[name] = {
            "statements": mean([s.sent for s in steps]),
            "transactions": mean([s.transactions for s in steps]),
            "sql": mean([len(s.statements) for s in steps]),
            "savepoints": mean(
                [sum(kind_and_table(q)[0] == "SAVEPOINT" for q in s.statements) for s in steps]
            ),
            "by_table": by_table(steps),
        }
        lines.append(
            f"| {name} | {figures[name]['statements']:g} | {figures[name]['transactions']:g} "
            f"| {top_shapes(steps)} | {figures[name]['sql']:g} | {figures[name]['savepoints']:g} |"
        )
    total_statements = sum(f["statements"] for f in figures.values())
    total_transactions = sum(f["transactions"] for f in figures.values())
    total_sql = sum(f["sql"] for f in figures.values())
    total_savepoints = sum(f["savepoints"] for f in figures.values())
    lines.append(
        f"| **whole visit** | **{total_statements:g}** | **{total_transactions:g}** | "
        f"| {total_sql:g} | {total_savepoints:g} |"
    )
    return lines, figures


def cluster_transactions(database: str) -> int:
    """Transactions committed or rolled back in ``database``, as PostgreSQL's statistics say."""
    with psycopg.connect(f"{surge.PG}/postgres", autocommit=True) as db:
        db.execute("SELECT pg_stat_clear_snapshot()")
        return db.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            [database],
        ).fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3, help="customers per core answer")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--output", default=str(surge.ROOT / "var" / "bench-statements.json"))
    parser.add_argument(
        "--bare", type=int, default=300, help="bare INSERT requests timed as the CPU baseline"
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="profile the steps that settle an activation (the code submit, the delivery, the "
        "callback, the message) with cProfile into FILE and print where their time goes",
    )
    options = parser.parse_args()
    global PROFILE
    if options.profile:
        PROFILE = cProfile.Profile(time.process_time)  # CPU, not waiting on the database

    workdir = Path(tempfile.mkdtemp(prefix="statements-"))
    env = environment(workdir)
    print(f"preparing {2 * options.customers} customers in {DB_NAME} …", flush=True)
    surge.prepare_database(env, 2 * options.customers, DB_NAME)
    import redis

    redis.Redis(db=REDIS_DB).flushdb()
    os.environ.update(env)
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    from activation.core.simulator import SimulatorConfig, make_server

    server, simulator = make_server(
        host="127.0.0.1",
        port=0,
        token=settings.CORE_API_TOKEN,
        webhook_secret=settings.CORE_WEBHOOK_SECRET,
        # The callback is sent by this script through the test client, not by the simulator.
        config=SimulatorConfig(callback_url="", callback_delay_seconds=0.05),
    )
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    settings.CORE_API_URL = f"http://127.0.0.1:{server.server_port}"
    try:
        connection.ensure_connection()
        xacts_before = cluster_transactions(DB_NAME)
        instant = [visit(i, simulator, pending=False) for i in range(options.customers)]
        pending = [
            visit(i, simulator, pending=True)
            for i in range(options.customers, 2 * options.customers)
        ]
        idle = background()
        bare = bare_requests(options.bare)
        floor = floor_activations(2 * options.customers)
        orm = orm_statement_cost(first_case_id())
        counted_here = sum(s.transactions for v in instant + pending for s in v.steps.values())
        counted_here += sum(s.transactions for s in idle.values())
        connection.close()  # an ended backend reports its statistics at once
        time.sleep(1)
        xacts_after = cluster_transactions(DB_NAME)
    finally:
        server.shutdown()
        server.server_close()

    report: dict = {"customers_per_answer": options.customers}
    for title, visits in (("core answers 201 (activated at once)", instant),
                          ("core answers 202, then its callback confirms", pending)):  # fmt: skip
        for skip_first in (False, True):
            label = "all customers" if not skip_first else "first customer left out (warm)"
            lines, figures = table(visits, skip_first=skip_first)
            print(f"\n### {title}: per-customer average, {label}\n")
            print("\n".join(lines))
            report[f"{title} / {label}"] = figures
    weighted = {}
    for skip_first in (False, True):
        _lines, now = table(instant, skip_first=skip_first)
        _lines, later = table(pending, skip_first=skip_first)
        weighted["warm" if skip_first else "all"] = {
            what: round(
                (1 - PENDING_SHARE) * sum(f[what] for f in now.values())
                + PENDING_SHARE * sum(f[what] for f in later.values()),
                1,
            )
            for what in ("statements", "transactions")
        }
    print(f"\n### per settled activation, {PENDING_SHARE:.0%} confirmed by callback: {weighted}")
    report["cpu"] = cpu_report(instant, pending, bare, floor)
    report["orm_statement_cost_ms"] = orm
    print("\n### one statement through the ORM and sent raw (ms of CPU, this thread)\n")
    print("| shape | ORM | raw | ORM − raw |\n|---|---:|---:|---:|")
    for name, timing in orm.items():
        print(
            f"| {name} | {timing['orm']} | {timing['raw']} | {timing['orm'] - timing['raw']:.3f} |"
        )
    print("\n### background, per run (nothing to do)\n")
    print("| run | statements | transactions | shapes |\n|---|---:|---:|---|")
    for name, step in idle.items():
        print(f"| {name} | {step.sent} | {step.transactions} | {top_shapes([step])} |")
    print("\n### by table and kind, per customer (warm, 201 and 202 visits together)\n")
    totals: collections.Counter = collections.Counter()
    for visits in (instant[1:] or instant, pending[1:] or pending):
        for v in visits:
            for s in v.steps.values():
                totals.update(kind_and_table(sql) for sql in s.statements)
    customers = len(instant[1:] or instant) + len(pending[1:] or pending)
    print("| kind | table | statements |\n|---|---|---:|")
    for (kind, name), n in totals.most_common():
        print(f"| {kind} | {name} | {n / customers:.1f} |")
    print(
        f"\ntransactions counted here: {counted_here}; "
        f"pg_stat_database for {DB_NAME}: {xacts_after - xacts_before} "
        "(it also counts the connection's own set-up and this script's reads between steps)"
    )
    report.update(
        per_activation=weighted,
        background={
            n: {"statements": s.sent, "transactions": s.transactions} for n, s in idle.items()
        },
        transactions_counted=counted_here,
        transactions_pg_stat_database=xacts_after - xacts_before,
        statements_seen={
            name: shape_list
            for name, shape_list in (
                (f"{i}: {step_name}", [shape(sql) for sql in step.statements])
                for i, v in enumerate(instant + pending)
                for step_name, step in v.steps.items()
            )
        },
    )
    Path(options.output).parent.mkdir(parents=True, exist_ok=True)
    Path(options.output).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nwritten: {options.output}")
    if PROFILE is not None:
        PROFILE.dump_stats(options.profile)
        stats = pstats.Stats(options.profile).strip_dirs().sort_stats("tottime")
        print(f"\n### where the settling steps spend their time (cProfile: {options.profile})\n")
        stats.print_stats(30)
    if not options.keep:
        with psycopg.connect(f"{surge.PG}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        redis.Redis(db=REDIS_DB).flushdb()


if __name__ == "__main__":
    main()
