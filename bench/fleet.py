"""Fleet run: the portal as a fleet on one machine, driven through HAProxy while nodes fail.

Starts HAProxy (deploy/haproxy.cfg, TLS), two gunicorn web nodes (deploy/gunicorn.conf.py), two
Celery worker nodes, two beats (one holds the lock, the other waits: portal/beat.py), PgBouncer
in transaction pooling mode (deploy/pgbouncer.ini) and the core simulator; uses the machine's
PostgreSQL, Redis and RabbitMQ (a virtual host of its own, quorum queues). Customers sign in, ask
for a code and submit it through HAProxy as a browser does, repeating a failed request once;
meanwhile, each at a seeded moment and bounded in time, a web node and a worker node are
SIGKILLed and started again, and RabbitMQ, Redis and PostgreSQL are restarted. Then it checks:
every case activated or with staff, no line activated twice at the core, no outbox row left in
flight, every chain verifies, each periodic job ran at most once per period; and reports how
many requests failed during each failover and for how long.

    python -m bench.fleet                       # make fleet: the whole run
    python -m bench.fleet --short               # CI: fewer customers, a web kill, a broker restart

Restarting Redis and PostgreSQL restarts the machine's own servers (Redis loses what it held):
run the whole fleet where nothing else uses them, or choose ``--postgres terminate`` (drop every
connection of the fleet's database instead) and ``--redis flush`` (drop every client and the
fleet's data) to leave other users alone.
"""

import argparse
import asyncio
import collections
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import httpx
import psycopg
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from bench import surge

ROOT = surge.ROOT
DB_NAME = "activation_rescue_fleet"
PG = surge.PG
PGBOUNCER_PORT = 6433
HAPROXY_PORT, WEB_PORTS, CORE_PORT = 8780, (8781, 8782), 8783
REDIS_DB = 13
VHOST = "activation_rescue_fleet"
PASSWORD = surge.PASSWORD
# The machine's own start commands (the machine notes, and .ci/run).
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)
SERVICES = {"postgres": "postgresql", "redis": "redis", "beam.smp": "rabbitmq"}
# The programs the run starts or drives, and the Debian package of each.
PROGRAMS = {
    "haproxy": "haproxy",
    "pgbouncer": "pgbouncer",
    "openssl": "openssl",
    "psql": "postgresql-client",
    "rabbitmqctl": "rabbitmq-server",
    "redis-cli": "redis-tools",
}
# A failed request and its retry are counted against a failover that began up to this long before.
FAILOVER_TAIL_SECONDS = 15.0


class Node:
    """One process of the fleet, in its own process group, that can be killed and started again."""

    def __init__(self, name: str, role: str, args: list[str], env: dict[str, str], workdir: Path):
        self.name, self.role, self.args, self.env, self.workdir = name, role, args, env, workdir
        self.popen: subprocess.Popen | None = None
        self.starts = 0
        # CPU of earlier incarnations, read just before each was killed.
        self.ended_cpu_seconds = 0.0

    def start(self) -> None:
        self.starts += 1
        log = (self.workdir / f"{self.name}.log").open("a")
        self.popen = subprocess.Popen(
            self.args,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """CPU of the node's process group so far, children that ended included."""
        return surge.cpu_seconds({self.pid: self.name}, services={})[self.name]

    def kill(self) -> None:
        """SIGKILL the node and its children at once, as a machine that lost power."""
        self.ended_cpu_seconds += self.cpu_seconds()
        os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait()

    def log(self) -> str:
        return (self.workdir / f"{self.name}.log").read_text(errors="replace")


def run(command: str | list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        shell=isinstance(command, str),
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def wait_until(check, *, timeout: float, what: str, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except Exception:  # noqa: S110 - a service coming up answers with anything, or nothing
            pass
        time.sleep(every)
    raise SystemExit(f"{what} did not happen within {timeout:.0f} s")


# --- Setting up --------------------------------------------------------------------------------


def make_certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost: HAProxy's PEM (certificate and key) and the CA."""
    key, cert = workdir / "tls.key", workdir / "tls.crt"
    run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ]
    )
    pem = workdir / "haproxy.pem"
    pem.write_text(cert.read_text() + key.read_text())
    return pem, cert


def environment(workdir: Path, ca_file: Path) -> dict[str, str]:
    """Production settings, every node alike, as the README's production section lists them."""
    env = surge.environment(workdir)
    del env["SECURE_SSL_REDIRECT"]  # HAProxy ends TLS: the portal sees https through it
    env.update(
        DJANGO_SETTINGS_MODULE="portal.settings",
        ALLOWED_HOSTS="localhost",
        WEBAUTHN_ORIGINS=f"https://localhost:{HAPROXY_PORT}",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{PGBOUNCER_PORT}/{DB_NAME}",
        DATABASE_TRANSACTION_POOLING="true",
        CELERY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:5672/{VHOST}",
        CACHE_URL=f"rediscache://127.0.0.1:6379/{REDIS_DB}",
        CORE_API_URL=f"http://127.0.0.1:{CORE_PORT}",
        TRUSTED_PROXY_COUNT="1",
        CELERY_BEAT_LOCK_SECONDS="12",
        PROMETHEUS_MULTIPROC_DIR=str(workdir / "metrics"),
        # The simulator's callbacks reach the portal through HAProxy, whose certificate is ours.
        SSL_CERT_FILE=str(ca_file),
        WEB_CONCURRENCY="2",
        GUNICORN_THREADS="4",
        LOG_LEVEL="WARNING",
    )
    (workdir / "metrics").mkdir()
    return env


def prepare_rabbitmq() -> None:
    """A virtual host of the fleet's own, empty: its queues are declared afresh as quorum queues."""
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", VHOST], capture_output=True, timeout=60)
    run(["rabbitmqctl", "-q", "add_vhost", VHOST])
    run(["rabbitmqctl", "-q", "set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"])


def pgbouncer_config(workdir: Path) -> Path:
    """Our settings (deploy/pgbouncer.ini), then the site's own: database, address, login."""
    (workdir / "userlist.txt").write_text('"postgres" ""\n')
    config = workdir / "pgbouncer.ini"
    config.write_text(
        f"""[databases]
{DB_NAME} = host=127.0.0.1 port=5432 dbname={DB_NAME}

%include {ROOT / "deploy" / "pgbouncer.ini"}
listen_addr = 127.0.0.1
listen_port = {PGBOUNCER_PORT}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "userlist.txt"}
admin_users = postgres
logfile =
pidfile =
"""
    )
    return config


def pgbouncer_command(workdir: Path) -> list[str]:
    command = ["pgbouncer", str(pgbouncer_config(workdir))]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root (CI runs as root): it drops to PostgreSQL's own user,
        # which must read its files.
        workdir.chmod(0o755)
        command[1:1] = ["-u", "postgres"]
    return command


def celery_command(*args: str) -> list[str]:
    """A Celery process of the portal, as deploy/Procfile starts it (logs only, no banner)."""
    return [sys.executable, "-m", "celery", "-A", "portal", "--quiet", *args]


def fleet_nodes(workdir: Path, env: dict[str, str], haproxy_pem: Path) -> dict[str, Node]:
    python = sys.executable
    base = f"https://localhost:{HAPROXY_PORT}"
    nodes = {
        "pgbouncer": Node("pgbouncer", "pgbouncer", pgbouncer_command(workdir), env, workdir),
        "core": Node(
            "core",
            "core simulator",
            [
                python,
                "manage.py",
                "run_core_simulator",
                f"--port={CORE_PORT}",
                "--capacity=4",
                "--latency-ms=30",
                "--pending-rate=0.3",
                "--callback-delay-seconds=1",
                f"--callback-url={base}/api/v1/core/events/",
            ],
            env,
            workdir,
        ),
    }
    for number, port in enumerate(WEB_PORTS, start=1):
        nodes[f"web{number}"] = Node(
            f"web{number}",
            "web",
            [python, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "portal.wsgi"],
            env | {"GUNICORN_BIND": f"127.0.0.1:{port}"},
            workdir,
        )
    for number in (1, 2):
        nodes[f"worker{number}"] = Node(
            f"worker{number}",
            "worker",
            celery_command(
                "worker",
                "--concurrency=2",
                f"--hostname=fleet{number}@%h",
                "--without-mingle",
                "--without-gossip",
            ),
            env,
            workdir,
        )
        nodes[f"beat{number}"] = Node(
            f"beat{number}",
            "beat",
            celery_command(
                "beat", "--loglevel=INFO", f"--schedule={workdir / f'beat{number}-schedule'}"
            ),
            env | {"LOG_LEVEL": "INFO"},  # who holds the lock, and each task it sends
            workdir,
        )
    haproxy_env = env | {
        "HAPROXY_BIND": f"127.0.0.1:{HAPROXY_PORT}",
        "HAPROXY_CERT": str(haproxy_pem),
        "HAPROXY_STATS_SOCKET": str(workdir / "haproxy.sock"),
        # Every customer of the run connects from 127.0.0.1.
        "HAPROXY_CONNECTIONS_PER_CLIENT": "100000",
        "PORTAL_HOST": "localhost",
        "WEB_NODE_1": f"127.0.0.1:{WEB_PORTS[0]}",
        "WEB_NODE_2": f"127.0.0.1:{WEB_PORTS[1]}",
    }
    nodes["haproxy"] = Node(
        "haproxy", "haproxy", ["haproxy", "-db", "-f", "deploy/haproxy.cfg"], haproxy_env, workdir
    )
    return nodes


def web_node_ready(port: int) -> bool:
    response = httpx.get(
        f"http://127.0.0.1:{port}/readyz",
        headers={"Host": "localhost", "X-Forwarded-Proto": "https"},
        timeout=2,
    )
    return response.status_code == 200


def haproxy_servers_up(workdir: Path) -> int:
    """How many web nodes HAProxy sends requests to now (its admin socket's ``show stat``)."""
    with socket.socket(socket.AF_UNIX) as admin:
        admin.connect(str(workdir / "haproxy.sock"))
        admin.sendall(b"show stat\n")
        answer = b"".join(iter(lambda: admin.recv(65536), b"")).decode()
    return sum(1 for line in answer.splitlines() if line.startswith("web,web") and ",UP," in line)


# --- Customers ---------------------------------------------------------------------------------


@dataclass
class Attempt:
    at: float  # seconds since the surge began
    step: str
    outcome: str  # "ok", or what went wrong: "status 502", "connection"
    retried_ok: bool | None = None


@dataclass
class Customer:
    index: int
    session: aiohttp.ClientSession
    case_id: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    flows: int = 0
    done: bool = False
    # Where each unsuccessful visit stopped, and with what answer.
    stops: list[str] = field(default_factory=list)

    def gave_up(self, step: str, status: int) -> bool:
        self.stops.append(f"{step}: {status}")
        return False

    @property
    def phone(self) -> str:
        return f"+86139{self.index:08d}"


class Surge:
    def __init__(self, base: str, ca_file: Path, sms_file: Path, began: float) -> None:
        self.base, self.sms_file, self.began = base, sms_file, began
        self.tls = ssl.create_default_context(cafile=str(ca_file))

    def now(self) -> float:
        return time.monotonic() - self.began

    async def request(
        self, customer: Customer, step: str, method: str, path: str, data: dict | None = None
    ) -> tuple[int, str]:
        """One request as a browser sends it; a failure (no answer, or a 5xx) is repeated once."""
        headers = {"Origin": self.base, "Referer": self.base + path}
        failed: Attempt | None = None
        for _try in range(2):
            outcome, status, text = "ok", 0, ""
            try:
                async with customer.session.request(
                    method, path, data=data, headers=headers, allow_redirects=False
                ) as response:
                    status, text = response.status, await response.text()
                    if status >= 500:
                        outcome = f"status {status}"
            except (TimeoutError, aiohttp.ClientError) as error:
                outcome = f"connection ({type(error).__name__})"
            if outcome == "ok":
                if failed is not None:
                    failed.retried_ok = True
                return status, text
            if failed is not None:
                failed.retried_ok = False
                break
            failed = Attempt(self.now(), step, outcome)
            customer.attempts.append(failed)
            await asyncio.sleep(1)  # the customer looks at the error page, then reloads
        return 599, ""

    def csrf(self, customer: Customer) -> str:
        return surge.csrf(customer.session)

    def sms_count(self, phone: str) -> tuple[int, str | None]:
        count, code = 0, None
        if self.sms_file.exists():
            for line in self.sms_file.read_text().splitlines():
                message = json.loads(line)
                if message["to"] == phone and (found := re.search(r"\d{6}", message["body"])):
                    count, code = count + 1, found.group(0)
        return count, code

    async def flow(self, customer: Customer) -> bool:
        """Sign in, ask for a code, type it in; answer whether the case was submitted."""
        customer.flows += 1
        status, _ = await self.request(customer, "login page", "GET", "/accounts/login/")
        if status == 200:
            form = {"username": f"bench{customer.index}", "password": PASSWORD}
            form["csrfmiddlewaretoken"] = self.csrf(customer)
            status, _ = await self.request(customer, "sign in", "POST", "/accounts/login/", form)
            if status != 302:
                return customer.gave_up("sign in", status)
        elif status != 302:  # 302: still signed in from the visit before
            return customer.gave_up("login page", status)
        status, listing = await self.request(customer, "case list", "GET", "/activation/")
        found = re.search(r"/activation/(\d+)/retry/", listing)
        if status != 200 or not found:
            if status == 200 and "/activation/" in listing:
                return True  # nothing left to retry: an earlier submission got through
            return customer.gave_up("case list", status)
        customer.case_id = int(found.group(1))
        retry = f"/activation/{customer.case_id}/retry/"
        seen, code = self.sms_count(customer.phone)
        data = {"action": "send", "channel": "sms", "csrfmiddlewaretoken": self.csrf(customer)}
        status, _ = await self.request(customer, "send code", "POST", retry, data)
        if status >= 500:
            return customer.gave_up("send code", status)
        for _wait in range(40):  # reading the phone: up to 20 s for the message
            await asyncio.sleep(0.5)
            count, newest = self.sms_count(customer.phone)
            if count > seen:
                code = newest
                break
        # No new message (another code was asked for a moment ago): the last one still works.
        if not code:
            return customer.gave_up("no code came", status)
        await asyncio.sleep(random.uniform(1, 3))  # typing it in
        data = {
            "action": "verify",
            "code": code,
            "submission_id": str(uuid.uuid4()),
            "csrfmiddlewaretoken": self.csrf(customer),
        }
        status, _ = await self.request(customer, "submit code", "POST", retry, data)
        return status == 302 or customer.gave_up("submit code", status)

    async def customer(self, customer: Customer, arrival: float) -> None:
        await asyncio.sleep(arrival)
        for _flow in range(3):
            if await self.flow(customer):
                customer.done = True
                return
            await asyncio.sleep(10)  # tries again a little later, as people do


# --- Failures ----------------------------------------------------------------------------------


@dataclass
class Failover:
    name: str
    at: float = 0.0  # seconds since the surge began
    seconds: float = 0.0  # how long the failure and the recovery took
    detail: str = ""


class Faults:
    def __init__(self, nodes: dict[str, Node], workdir: Path, options) -> None:
        self.nodes, self.workdir, self.options = nodes, workdir, options

    def kill_web_node(self) -> str:
        node = self.nodes["web1"]
        node.kill()
        time.sleep(3)
        node.start()
        wait_until(lambda: web_node_ready(WEB_PORTS[0]), timeout=60, what="web1 again")
        wait_until(lambda: haproxy_servers_up(self.workdir) == 2, timeout=30, what="HAProxy: web1")
        return "SIGKILL web1 (gunicorn and its workers); started again after 3 s"

    def kill_worker_node(self) -> str:
        node = self.nodes["worker1"]
        node.kill()
        time.sleep(5)
        node.start()
        return "SIGKILL worker1 (Celery and its children); started again after 5 s"

    def restart_rabbitmq(self) -> str:
        run(["rabbitmqctl", "-q", "shutdown"])  # the whole node, and waits until it is gone
        time.sleep(2)
        # Detached, in a session of its own, its output nowhere: the node outlives this run.
        subprocess.run(
            ["rabbitmq-server", "-detached"],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            timeout=60,
        )
        wait_until(
            lambda: (
                subprocess.run(["rabbitmqctl", "-q", "await_startup"], timeout=60).returncode == 0
            ),
            timeout=90,
            what="RabbitMQ again",
            every=1,
        )
        return "rabbitmqctl shutdown, 2 s, rabbitmq-server -detached"

    def restart_redis(self) -> str:
        if self.options.redis == "flush":
            run(["redis-cli", "-n", str(REDIS_DB), "flushdb"])
            run(["redis-cli", "client", "kill", "type", "normal"])
            return "dropped every Redis client and the fleet's data"
        subprocess.run(["redis-cli", "shutdown", "nosave"], capture_output=True, timeout=30)
        time.sleep(2)
        run(REDIS_START)
        wait_until(
            lambda: run(["redis-cli", "ping"]).stdout.strip() == "PONG", timeout=30, what="Redis"
        )
        return "redis-cli shutdown nosave, 2 s, started again (empty)"

    def restart_postgres(self) -> str:
        if self.options.postgres == "terminate":
            with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
                ended = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    [DB_NAME],
                ).fetchone()[0]
            return f"terminated all {ended} connections to {DB_NAME}"
        version = sorted(os.listdir("/etc/postgresql"))[-1]
        run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"]
        )
        return f"pg_ctlcluster {version} main restart -m fast"

    def run_at(self, plan: list[tuple[float, str]], began: float) -> list[Failover]:
        done = []
        for moment, name in plan:
            time.sleep(max(0.0, moment - (time.monotonic() - began)))
            failover = Failover(name, at=round(time.monotonic() - began, 1))
            started = time.monotonic()
            failover.detail = getattr(self, name)()
            failover.seconds = round(time.monotonic() - started, 1)
            print(
                f"  {failover.at:6.1f} s  {name}: {failover.detail} ({failover.seconds} s)",
                flush=True,
            )
            done.append(failover)
        return done


def database_activity() -> dict[str, int]:
    """The fleet database's transactions and row writes so far, and the cluster's WAL position.

    The WAL is the whole cluster's: quiet other databases for a clean figure.
    """
    with psycopg.connect(f"{PG}/postgres") as db:
        row = db.execute(
            "SELECT xact_commit + xact_rollback, tup_inserted, tup_updated, tup_deleted, "
            "pg_current_wal_lsn() - '0/0'::pg_lsn FROM pg_stat_database WHERE datname = %s",
            [DB_NAME],
        ).fetchone()
    names = ("transactions", "inserted", "updated", "deleted", "wal_bytes")
    return dict(zip(names, map(int, row), strict=True))


def pooler_activity() -> dict[str, int]:
    """Statements and transactions PgBouncer passed to the fleet's database so far.

    Every one of the fleet's processes reaches PostgreSQL through PgBouncer, so its counters are
    exact (the health checks' ``SELECT 1`` included). Its console speaks only the simple query
    protocol: psql asks.
    """
    answer = run(
        ["psql", "-h", "127.0.0.1", "-p", str(PGBOUNCER_PORT), "-U", "postgres", "-A", "-F", "\t",
         "pgbouncer", "-c", "SHOW STATS"]
    ).stdout.splitlines()  # fmt: skip
    header = answer[0].split("\t")
    for line in answer[1:]:
        row = dict(zip(header, line.split("\t"), strict=False))
        if row.get("database") == DB_NAME:
            return {
                "statements": int(row["total_query_count"]),
                "transactions": int(row["total_xact_count"]),
            }
    return {"statements": 0, "transactions": 0}


def per_activation(amounts: collections.Counter, activations: int) -> dict[str, float]:
    return {what: round(amount / max(activations, 1), 1) for what, amount in amounts.items()}


RESTARTED_SERVICE = {
    "restart_postgres": "postgresql",
    "restart_redis": "redis",
    "restart_rabbitmq": "rabbitmq",
}


def cpu_by_role(nodes: dict[str, Node]) -> collections.Counter:
    """CPU seconds used so far by each kind of node (killed incarnations included) and service.

    A PostgreSQL backend or Redis that ended meanwhile takes its CPU with it: figures for the
    services hold for a run in which they were not restarted (``--no-faults``).
    """
    # One pass over /proc: every node's process group by its role, and the services by name.
    used = surge.cpu_seconds({node.pid: node.role for node in nodes.values()}, SERVICES)
    for node in nodes.values():
        used[node.role] += node.ended_cpu_seconds
    return used


# The capacity model (docs/deploy.md): nodes of this many cores, run at most this busy, so that
# losing one node or a burst still fits; PostgreSQL's primary at most this busy.
NODE_CORES, NODE_BUSY, PRIMARY_BUSY = 2, 0.6, 0.7
PEAKS = (10, 50, 100, 250, 500)


def capacity_table(cpu_ms: dict[str, float], password_ms: float) -> str:
    """Nodes of each kind a peak of activations per second needs, from measured CPU per role."""

    def nodes(role: str, peak: int, spare: int = 1) -> int:
        return math.ceil(peak * cpu_ms.get(role, 0) / (1000 * NODE_CORES * NODE_BUSY)) + spare

    def cores(role: str, peak: int, busy: float = 1.0) -> float:
        return round(peak * cpu_ms.get(role, 0) / 1000 / busy, 1)

    signed_in = dict(cpu_ms, web=max(cpu_ms.get("web", 0) - password_ms, 0))
    rows = [
        "| activations per second | " + " | ".join(str(peak) for peak in PEAKS) + " |",
        "|---|" + "---|" * len(PEAKS),
    ]

    def row(label: str, values) -> None:
        rows.append(f"| {label} | " + " | ".join(str(v) for v in values) + " |")

    row("web nodes (2 cores, N+1), signing in each time", [nodes("web", p) for p in PEAKS])
    row(
        "web nodes (2 cores, N+1), already signed in",
        [math.ceil(p * signed_in["web"] / (1000 * NODE_CORES * NODE_BUSY)) + 1 for p in PEAKS],
    )
    row("worker nodes (2 cores, N+1)", [nodes("worker", p) for p in PEAKS])
    row(
        "PgBouncer processes at least (one core each)",
        [math.ceil(p * cpu_ms.get("pgbouncer", 0) / (1000 * NODE_BUSY)) for p in PEAKS],
    )
    row(
        "PostgreSQL primary cores (at 70 %)",
        [cores("postgresql", p, PRIMARY_BUSY) for p in PEAKS],
    )
    row("RabbitMQ cores (the queue leader's node)", [cores("rabbitmq", p) for p in PEAKS])
    row("Redis cores (one thread: at most 1)", [cores("redis", p) for p in PEAKS])
    row("HAProxy cores (TLS included)", [cores("haproxy", p) for p in PEAKS])
    return "\n".join(rows)


def fault_plan(names: list[str], seconds: float, seed: int) -> list[tuple[float, str]]:
    """Each failure at a seeded moment of its own slot of the surge, so none overlaps another."""
    if not names:
        return []
    randomness = random.Random(seed)
    order = names[:]
    randomness.shuffle(order)
    start, end = 0.15 * seconds, 0.8 * seconds
    slot = (end - start) / len(order)
    return [
        (round(start + i * slot + randomness.uniform(0, 0.4 * slot), 1), name)
        for i, name in enumerate(order)
    ]


# --- Checking ----------------------------------------------------------------------------------


def database_counts() -> dict:
    with psycopg.connect(f"{PG}/{DB_NAME}") as db:
        states = dict(
            db.execute("SELECT state, count(*) FROM activation_activationcase GROUP BY state")
        )
        outbox = dict(
            db.execute("SELECT status, count(*) FROM activation_corerequest GROUP BY status")
        )
    return {"cases": states, "outbox": outbox}


def settled() -> dict | None:
    counts = database_counts()
    busy = sum(counts["cases"].get(s, 0) for s in ("submitting", "awaiting_confirmation"))
    waiting = counts["outbox"].get("pending", 0) + counts["outbox"].get("in_flight", 0)
    return counts if busy == 0 and waiting == 0 else None


def periodic_runs(workdir: Path) -> dict[str, int]:
    """How many times each task ran to an end, from every worker's metrics files."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(workdir / "metrics"))
    runs: collections.Counter = collections.Counter()
    for metric in registry.collect():
        if metric.name == "activation_rescue_celery_tasks":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    runs[sample.labels["task"]] += int(sample.value)
    return dict(runs)


def failover_report(customers: list[Customer], failovers: list[Failover]) -> list[dict]:
    attempts = [attempt for customer in customers for attempt in customer.attempts]
    report = []
    for number, failover in enumerate(failovers):
        end = failovers[number + 1].at if number + 1 < len(failovers) else float("inf")
        window_end = min(end, failover.at + failover.seconds + FAILOVER_TAIL_SECONDS)
        during = [a for a in attempts if failover.at <= a.at < window_end]
        report.append(
            {
                "failure": failover.name,
                "at_second": failover.at,
                "what": failover.detail,
                "took_seconds": failover.seconds,
                "requests_failed_first_time": len(during),
                "requests_failed_after_one_retry": sum(1 for a in during if a.retried_ok is False),
                "failing_for_seconds": round(
                    max(a.at for a in during) - min(a.at for a in during), 1
                )
                if during
                else 0.0,
                "by_outcome": dict(collections.Counter(a.outcome for a in during)),
            }
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    # 300 customers over two minutes keep this 2-core machine at about two thirds of its CPU, so
    # what fails is the failover, not an overloaded machine.
    parser.add_argument("--seconds", type=float, default=120.0, help="over which customers arrive")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--short", action="store_true", help="CI: a web kill and a broker restart")
    parser.add_argument(
        "--no-faults", action="store_true", help="nothing fails: CPU per activation by role"
    )
    parser.add_argument("--postgres", choices=("restart", "terminate"), default="restart")
    parser.add_argument("--redis", choices=("restart", "flush"), default="restart")
    parser.add_argument("--output", default=str(ROOT / "var" / "fleet.json"))
    options = parser.parse_args(argv)
    missing = [program for program in PROGRAMS if shutil.which(program) is None]
    if missing:
        packages = " ".join(PROGRAMS[program] for program in missing)
        parser.exit(
            2,
            f"bench.fleet needs {', '.join(missing)}: apt-get install {packages} "
            "(RabbitMQ, PostgreSQL and Redis must also be running; see .ci/run)\n",
        )
    if options.no_faults:
        faults = []
    elif options.short:
        faults = ["kill_web_node", "restart_rabbitmq"]
    else:
        faults = [
            "kill_web_node",
            "kill_worker_node",
            "restart_rabbitmq",
            "restart_redis",
            "restart_postgres",
        ]

    workdir = Path(tempfile.mkdtemp(prefix="fleet-"))
    pem, ca_file = make_certificate(workdir)
    env = environment(workdir, ca_file)
    print(f"fleet in {workdir}: preparing {options.customers} customers …", flush=True)
    surge.prepare_database(env | {"DATABASE_URL": f"{PG}/{DB_NAME}"}, options.customers, DB_NAME)
    run(["redis-cli", "-n", str(REDIS_DB), "flushdb"])
    prepare_rabbitmq()
    nodes = fleet_nodes(workdir, env, pem)
    result: dict = {"machine": {"cores": os.cpu_count()}, "customers": options.customers}
    try:
        for name in (
            "pgbouncer",
            "core",
            "web1",
            "web2",
            "worker1",
            "worker2",
            "beat1",
            "beat2",
            "haproxy",
        ):
            nodes[name].start()
        for port in WEB_PORTS:
            wait_until(lambda port=port: web_node_ready(port), timeout=90, what=f"web node :{port}")
        wait_until(lambda: haproxy_servers_up(workdir) == 2, timeout=30, what="HAProxy's two nodes")
        wait_until(
            lambda: "beat: Acquired lock" in nodes["beat1"].log() + nodes["beat2"].log(),
            timeout=60,
            what="a beat holding the lock",
        )
        began = time.monotonic()
        cpu_before, database_before = cpu_by_role(nodes), database_activity()
        pooler_before = pooler_activity()
        # Beat ran while the fleet came up: count from here.
        runs_before = collections.Counter(periodic_runs(workdir))
        plan = fault_plan(faults, options.seconds, options.seed)
        print("failures planned at", plan, flush=True)
        customers, failovers = asyncio.run(
            drive(options, env, ca_file, began, Faults(nodes, workdir, options), plan)
        )
        surge_seconds = round(time.monotonic() - began, 1)
        counts = wait_until(settled, timeout=300, what="every case settled", every=1)
        settled_seconds = round(time.monotonic() - began, 1)
        cpu = cpu_by_role(nodes)
        cpu.subtract(cpu_before)
        for fault, service in RESTARTED_SERVICE.items():
            if fault in faults:
                # Its processes ended meanwhile and took their CPU figures with them.
                cpu.pop(service, None)
        # An idle backend reports its counts within ten seconds (PostgreSQL 15's statistics).
        time.sleep(11)
        database = collections.Counter(database_activity())
        database.subtract(database_before)
        pooled = collections.Counter(pooler_activity())
        pooled.subtract(pooler_before)
        chains = subprocess.run(
            [sys.executable, "manage.py", "verify_audit_chain"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        core = httpx.get(f"http://127.0.0.1:{CORE_PORT}/_sim/stats", timeout=10).json()
        beat_seconds = time.monotonic() - began
        runs = collections.Counter(periodic_runs(workdir))
        runs.subtract(runs_before)
    finally:
        for node in nodes.values():
            node.stop()
    activated = counts["cases"].get("activated", 0)
    cpu_ms = surge.milliseconds_each(cpu, activated)
    password_ms = password_check_cpu_ms(env)
    result.update(
        surge_seconds=surge_seconds,
        seconds_until_settled=settled_seconds,
        activations_per_second=round(activated / settled_seconds, 2),
        cpu_ms_per_activation=cpu_ms,
        # Each activation here is a whole visit: sign in (a password check), the case list, a
        # code sent, the code checked and sent to the core, the core's callback.
        password_check_cpu_ms=password_ms,
        database_per_activation=per_activation(database, activated),
        # Through PgBouncer: every statement the fleet sent, its health checks included.
        pooler_per_activation=per_activation(pooled, activated),
        capacity_table=capacity_table(cpu_ms, password_ms),
        requests_through_haproxy=len(re.findall(r" portal~? web/web\d ", nodes["haproxy"].log())),
        failovers=failover_report(customers, failovers),
        customers_done=sum(c.done for c in customers),
        customers_who_started_over=sum(1 for c in customers if c.flows > 1),
        visits_stopped_at=dict(collections.Counter(stop for c in customers for stop in c.stops)),
        customers_not_done={f"bench{c.index}": c.stops for c in customers if not c.done},
        final=counts,
        duplicate_activations_at_core=sum(1 for n in core["activations"].values() if n > 1),
        chains=chains.stdout.strip() or chains.stderr.strip()[-500:],
        beat_locks_acquired={
            n: nodes[n].log().count("beat: Acquired lock") for n in ("beat1", "beat2")
        },
        periodic=periodic_report(runs, beat_periods(env), beat_seconds),
        workdir=str(workdir),
    )
    problems = check(result, chains.returncode, options.customers)
    result["problems"] = problems
    Path(options.output).parent.mkdir(parents=True, exist_ok=True)
    Path(options.output).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 1 if problems else 0


PERIODIC = {
    "activation.tasks.sweep_core_outbox": "sweep-core-outbox",
    "activation.tasks.reconcile_activations": "reconcile-activations",
    "portal.tasks.stamp_worker_heartbeat": "stamp-worker-heartbeat",
}


def beat_periods(env: dict[str, str]) -> dict[str, float]:
    """The fleet's periods of the interval jobs, as its nodes' settings say."""
    code = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps({k: v['schedule'] for k, v in settings.CELERY_BEAT_SCHEDULE.items() "
        "if isinstance(v['schedule'], (int, float))}))"
    )
    return surge.json_from_child(["-c", code], env)


def password_check_cpu_ms(env: dict[str, str]) -> float:
    """CPU milliseconds of one password check with the nodes' hasher: most of a sign-in."""
    code = (
        "import django, json, time; django.setup(); "
        "from django.contrib.auth.hashers import check_password, make_password; "
        "hashed = make_password('x'); began = time.process_time(); "
        "[check_password('x', hashed) for _ in range(5)]; "
        "print(json.dumps({'ms': 1000 * (time.process_time() - began) / 5}))"
    )
    return round(surge.json_from_child(["-c", code], env)["ms"], 1)


def periodic_report(runs: dict[str, int], periods: dict[str, float], seconds: float) -> dict:
    report = {}
    for task, entry in PERIODIC.items():
        period = float(periods[entry])
        report[task] = {
            "period_seconds": period,
            "ran": runs.get(task, 0),
            "periods": round(seconds / period, 1),
        }
    return report


def check(result: dict, chains_exit: int, customers: int) -> list[str]:
    problems = []
    cases = result["final"]["cases"]
    stranded = {
        state: n for state, n in cases.items() if state not in ("activated", "needs_review")
    }
    if stranded:
        problems.append(f"cases neither activated nor with staff: {stranded}")
    if sum(cases.values()) != customers:
        problems.append(f"{sum(cases.values())} cases, not {customers}")
    if result["duplicate_activations_at_core"]:
        problems.append(f"{result['duplicate_activations_at_core']} lines activated twice")
    outbox = result["final"]["outbox"]
    if outbox.get("in_flight") or outbox.get("pending"):
        problems.append(f"outbox rows left: {outbox}")
    if chains_exit != 0:
        problems.append(f"the chains did not verify: {result['chains']}")
    for task, figures in result["periodic"].items():
        # Once per period at most: a beat that ran twice would send about twice as many.
        if figures["ran"] > figures["periods"] + 2:
            problems.append(f"{task} ran {figures['ran']} times in {figures['periods']} periods")
        # And it did run: a job sent while the broker was down is lost for that period, which
        # only a job of many periods in the run can tell from a beat that sends nothing.
        if figures["periods"] >= 5 and figures["ran"] < figures["periods"] / 3:
            problems.append(
                f"{task} ran only {figures['ran']} times in {figures['periods']} periods"
            )
    return problems


async def drive(options, env, ca_file: Path, began: float, faults: Faults, plan):
    """The customers arrive evenly over ``--seconds`` while the failures happen in a thread."""
    surge_ = Surge(f"https://localhost:{HAPROXY_PORT}", ca_file, Path(env["SMS_FILE_PATH"]), began)
    connector = aiohttp.TCPConnector(limit=0, ssl=surge_.tls)
    customers = [
        Customer(index, surge.new_session(connector, surge_.base))
        for index in range(options.customers)
    ]
    arrivals = [options.seconds * index / options.customers for index in range(options.customers)]
    failing = asyncio.create_task(asyncio.to_thread(faults.run_at, plan, began))
    await asyncio.gather(*map(surge_.customer, customers, arrivals))
    failovers = await failing
    for customer in customers:
        await customer.session.close()
    await connector.close()
    return customers, failovers


if __name__ == "__main__":
    sys.exit(main())
