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
    env = surge.environment(workdir)
    env.update(
        DATABASE_URL=f"{surge.PG}/{DB_NAME}",
        CACHE_URL=f"rediscache://127.0.0.1:6379/{REDIS_DB}",
        # Nothing is consumed from it: the tasks' functions are called directly.
        CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{REDIS_DB}",
        CELERY_TASK_ALWAYS_EAGER="false",
        SMS_BACKEND="verification.sms.LocmemBackend",
        ALLOWED_HOSTS=f"{HOST},127.0.0.1",
    )
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
    with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(wrapper):
        if profiling:
            PROFILE.enable()
        try:
            yield step
        finally:
            if profiling:
                PROFILE.disable()
    step.statements = [
        query["sql"]
        for query in captured.captured_queries
        if query["sql"] not in TRANSACTION_MARKERS
    ]


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
    # The core's client, its middleware loaded before anything is counted (as a server's is).
    callback = Client(HTTP_HOST=HOST)
    callback.get("/healthz")
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
