"""Surge benchmark: customers sign in and submit a retry; compare with a bare INSERT view.

Runs the portal as in production (gunicorn, DEBUG off, Redis cache and broker, PostgreSQL), two
Celery workers, beat and the core simulator with a capacity limit, then drives them from one
asyncio client (aiohttp). Usage:

    python -m bench.surge --users 200
"""

import argparse
import asyncio
import base64
import collections
import json
import os
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "activation_rescue_bench"
PG = "postgres://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/15"
WEB_PORT, CORE_PORT = 8765, 8766
PASSWORD = "bench-password-123"  # noqa: S105


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# The shared services' processes, by the start of their name, and the role they count under.
SERVICES = {"postgres": "postgresql", "redis": "redis"}


def cpu_seconds(roles: dict[int, str], services: dict[str, str] = SERVICES) -> collections.Counter:
    """CPU seconds used so far, by role: our process groups, the services, this client.

    Each process counts its own CPU and that of its children that ended and were waited for
    (``cutime``, ``cstime``): a PostgreSQL backend that ends mid-phase moves into its
    postmaster's figure instead of vanishing, so no phase reads negative. This client counts
    only its own: it waits for the set-up commands it ran.
    """
    totals: collections.Counter = collections.Counter()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended meanwhile
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        group, used = int(fields[2]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        if int(entry.name) == os.getpid():
            totals["load generator"] += used
            continue
        used += (int(fields[13]) + int(fields[14])) / CLOCK_TICKS  # its children that ended
        if group in roles:
            totals[roles[group]] += used
        elif service := next(
            (role for start, role in services.items() if name.startswith(start)), None
        ):
            totals[service] += used
    return totals


class CpuMeter:
    """CPU milliseconds per request, by role, between ``start`` and ``per_request``."""

    def __init__(self, roles: dict[int, str], services: dict[str, str] = SERVICES) -> None:
        self.roles, self.services, self.began = roles, services, collections.Counter()

    def start(self) -> None:
        self.began = cpu_seconds(self.roles, self.services)

    def per_request(self, requests: int) -> dict[str, float]:
        used = cpu_seconds(self.roles, self.services)
        used.subtract(self.began)
        return milliseconds_each(used, requests)


def milliseconds_each(used: collections.Counter, count: int) -> dict[str, float]:
    """CPU seconds by role, as milliseconds for each of ``count`` requests (or activations)."""
    by_role = {role: round(1000 * seconds / max(count, 1), 2) for role, seconds in used.items()}
    return dict(sorted(by_role.items())) | {"total": round(sum(by_role.values()), 2)}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def environment(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TEST_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        PORTAL_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="false",  # plain HTTP on loopback stands in for the TLS proxy
        CORE_API_TOKEN=secrets.token_urlsafe(24),
        CORE_WEBHOOK_SECRET="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode(),
        WEBAUTHN_RP_ID="localhost",
        WEBAUTHN_ORIGINS="https://localhost",
        DATABASE_URL=f"{PG}/{DB_NAME}",
        CELERY_BROKER_URL=REDIS,
        CACHE_URL=REDIS.replace("redis://", "rediscache://"),
        CORE_API_URL=f"http://127.0.0.1:{CORE_PORT}",
        SMS_BACKEND="verification.sms.FileBackend",
        SMS_FILE_PATH=str(workdir / "sms.jsonl"),
        PORTAL_VAR_DIR=str(workdir),
        TRUSTED_PROXY_COUNT="0",  # the load generator talks to gunicorn directly
        ACTIVATION_RETRY_RATE_PER_IP="1000000/m",  # every virtual customer shares 127.0.0.1
        ACCOUNTS_SIGN_IN_RATE_PER_IP="1000000/m",  # and signs in from it
        ACTIVATION_SWEEP_INTERVAL_SECONDS="2",
        ACTIVATION_RECONCILE_INTERVAL_SECONDS="5",
        ACTIVATION_CONFIRMATION_POLL_AFTER_SECONDS="5",
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="WARNING",
    )
    return env


def environment_on(workdir: Path, *, database: str, redis_db: int, hosts: str) -> dict[str, str]:
    """The surge's production settings on another benchmark's database and Redis db, with SMS
    kept in memory and ``hosts`` allowed."""
    env = environment(workdir)
    env.update(
        DATABASE_URL=f"{PG}/{database}",
        CACHE_URL=f"rediscache://127.0.0.1:6379/{redis_db}",
        CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{redis_db}",
        SMS_BACKEND="verification.sms.LocmemBackend",
        ALLOWED_HOSTS=hosts,
    )
    return env


def prepare_database(env: dict[str, str], customers: int, database: str = DB_NAME) -> None:
    """Create ``database`` afresh, migrate it (through ``env``) and seed ``customers``, each with
    a credit line and a stuck case."""
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {database}")
    for command in (["migrate"], ["collectstatic", "--noinput"]):
        subprocess.run(
            [sys.executable, "manage.py", *command, "-v0"], cwd=ROOT, env=env, check=True
        )
    seed = f"""
from django.contrib.auth.hashers import make_password
from django.db import connection
from accounts.models import User
from activation.models import CreditLine
from activation.services import open_case
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE bench_probe (id bigserial primary key, created_at timestamptz)")
hashed = make_password({PASSWORD!r})
users = User.objects.bulk_create(
    User(username=f"bench{{i}}", password=hashed, phone_number=f"+86139{{i:08d}}",
         customer_reference=f"B-{{i:06d}}") for i in range({customers})
)
for user in users:
    line = CreditLine.objects.create(customer=user, reference=f"BL-{{user.pk:06d}}",
                                     product_name="Bench", credit_limit=1000)
    open_case(credit_line=line, reason="core_unavailable")
"""
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", seed], cwd=ROOT, env=env, check=True
    )


def start(
    role: str, args: list[str], env: dict[str, str], log: Path
) -> tuple[str, subprocess.Popen]:
    """Start one process in its own process group; ``role`` names it in the CPU figures."""
    process = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return role, process


def json_from_child(args: list[str], env: dict[str, str]) -> dict:
    """Run a Python child in the project with ``env``; answer the JSON of its last line."""
    finished = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return json.loads(finished.stdout.strip().splitlines()[-1])


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not come up")


def new_session(connector: aiohttp.TCPConnector, base: str) -> aiohttp.ClientSession:
    """One customer's browser: its own cookies over the shared pool of kept-alive connections."""
    return aiohttp.ClientSession(
        base_url=base,
        connector=connector,
        connector_owner=False,
        cookie_jar=aiohttp.CookieJar(unsafe=True),  # unsafe: keep cookies for an IP address
        timeout=aiohttp.ClientTimeout(total=300),
    )


def csrf(session: aiohttp.ClientSession) -> str:
    return next((cookie.value for cookie in session.cookie_jar if cookie.key == "csrftoken"), "")


async def post(session: aiohttp.ClientSession, url: str, data: dict | None = None) -> int:
    """POST without following redirects; answer the status (599: the connection failed twice)."""
    for _try in range(2):
        try:
            async with session.post(url, data=data, allow_redirects=False) as response:
                await response.read()
                return response.status
        except aiohttp.ClientConnectionError:
            # As a browser does when a kept-alive connection was closed under it; the form's
            # submission id makes the repeat safe.
            continue
    return 599


async def bare_view(base: str, users: int, per_user: int, meter: CpuMeter) -> dict:
    """The baseline: ``users`` clients POST ``per_user`` times each to the one-INSERT view."""
    latencies: list[float] = []
    statuses: list[int] = []
    connector = aiohttp.TCPConnector(limit=0)

    async def one_user(session: aiohttp.ClientSession) -> None:
        for _request in range(per_user):
            began = time.perf_counter()
            statuses.append(await post(session, "/_bench/insert"))
            latencies.append(time.perf_counter() - began)

    sessions = [new_session(connector, base) for _ in range(users)]
    meter.start()
    began = time.perf_counter()
    await asyncio.gather(*(one_user(session) for session in sessions))
    elapsed = time.perf_counter() - began
    cpu = meter.per_request(len(latencies))
    for session in sessions:
        await session.close()
    await connector.close()
    return summary(latencies, statuses, elapsed, expected=200) | {"cpu_ms_per_request": cpu}


# What runs the portal, as against the core simulator and this load generator.
PORTAL_ROLES = ("web", "workers", "beat", "postgresql", "redis")


def portal_cpu(by_role: dict[str, float]) -> float:
    return sum(by_role.get(role, 0.0) for role in PORTAL_ROLES)


def summary(latencies: list[float], statuses: list[int], elapsed: float, *, expected: int) -> dict:
    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "throughput_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "mean_ms": round(statistics.mean(latencies) * 1000, 1),
        "status_5xx": sum(1 for s in statuses if s >= 500),
        "status_unexpected": sum(1 for s in statuses if s < 500 and s != expected),
    }


def sms_codes(sms_file: Path) -> dict[str, str]:
    """The newest code sent to each phone number."""
    codes = {}
    for line in sms_file.read_text().splitlines():
        message = json.loads(line)
        if found := re.search(r"\d{6}", message["body"]):
            codes[message["to"]] = found.group(0)
    return codes


@dataclass
class Customer:
    index: int
    session: aiohttp.ClientSession
    case_id: int = 0

    @property
    def phone(self) -> str:
        return f"+86139{self.index:08d}"


async def sign_in_and_ask_for_code(customer: Customer) -> None:
    """Not timed: sign in, find the stuck case, ask for an SMS code."""
    session = customer.session
    async with session.get("/accounts/login/") as response:
        await response.read()
    data = {"username": f"bench{customer.index}", "password": PASSWORD}
    status = await post(session, "/accounts/login/", {**data, "csrfmiddlewaretoken": csrf(session)})
    if status != 302:
        raise SystemExit(f"bench{customer.index} could not sign in ({status})")
    async with session.get("/activation/") as response:
        listing = await response.text()
    customer.case_id = int(re.search(r"/activation/(\d+)/retry/", listing).group(1))
    data = {"action": "send", "channel": "sms", "csrfmiddlewaretoken": csrf(session)}
    await post(session, f"/activation/{customer.case_id}/retry/", data)


async def submit_code(customer: Customer, code: str) -> tuple[float, int]:
    """Timed: "Verify and activate". Answers (seconds, status)."""
    data = {
        "action": "verify",
        "code": code,
        "submission_id": str(uuid.uuid4()),
        "csrfmiddlewaretoken": csrf(customer.session),
    }
    began = time.perf_counter()
    status = await post(customer.session, f"/activation/{customer.case_id}/retry/", data)
    return time.perf_counter() - began, status


def figures(results: list[tuple[float, int]], elapsed: float) -> dict:
    latencies = [seconds for seconds, _status in results]
    statuses = [status for _seconds, status in results]
    return summary(latencies, statuses, elapsed, expected=302)  # to the case's page


async def surge(
    base: str, users: int, sms_file: Path, think: tuple[float, float], meter: CpuMeter
) -> dict:
    """Two groups of ``users`` customers sign in and ask for a code (not timed), then submit it.

    The first group submits all at once (the burst: throughput against the bare view); the
    second submits as customers do, each after reading the SMS and typing the code, a uniformly
    random ``think`` seconds after the group was ready (the latency target).
    """
    connector = aiohttp.TCPConnector(limit=0)
    customers = [Customer(i, new_session(connector, base)) for i in range(2 * users)]
    await asyncio.gather(*(sign_in_and_ask_for_code(customer) for customer in customers))
    codes = sms_codes(sms_file)
    burst, paced = customers[:users], customers[users:]

    meter.start()
    began = time.perf_counter()
    results = await asyncio.gather(*(submit_code(c, codes[c.phone]) for c in burst))
    elapsed = time.perf_counter() - began
    burst_figures = figures(results, elapsed)
    burst_figures["seconds_until_settled"] = await asyncio.to_thread(wait_until_settled)
    # Everything a submit set off, to the core's answer and the customer's SMS.
    burst_figures["cpu_ms_per_submit_until_settled"] = meter.per_request(len(burst))

    randomness = random.Random(4)  # the same arrival times in every run

    async def after_thinking(customer: Customer, delay: float) -> tuple[float, int]:
        await asyncio.sleep(delay)
        return await submit_code(customer, codes[customer.phone])

    delays = [randomness.uniform(*think) for _ in paced]
    began = time.perf_counter()
    results = await asyncio.gather(*map(after_thinking, paced, delays))
    elapsed = time.perf_counter() - began
    paced_figures = figures(results, elapsed)
    paced_figures["think_seconds"] = list(think)
    paced_figures["seconds_until_settled"] = await asyncio.to_thread(wait_until_settled)

    signed_in = await signed_in_baseline(burst, per_customer=10, meter=meter)
    floor = await floor_activations(burst, per_customer=3, meter=meter)
    for customer in customers:
        await customer.session.close()
    await connector.close()
    return {
        "burst": burst_figures,
        "paced": paced_figures,
        "signed_in_nothing": signed_in,
        "floor_activation": floor,
    }


async def signed_in_baseline(customers: list[Customer], *, per_customer: int, meter: CpuMeter):
    """A second baseline: signed-in customers POST to a view that does nothing at all."""
    meter.start()
    results, elapsed = await signed_in_posts(customers, "/_bench/signed-in-nothing", per_customer)
    return figures(results, elapsed) | {"cpu_ms_per_request": meter.per_request(len(results))}


async def signed_in_posts(
    customers: list[Customer], url: str, per_customer: int
) -> tuple[list[tuple[float, int]], float]:
    """Each customer POSTs to ``url`` ``per_customer`` times in turn, all customers at once;
    answer each POST's latency and status, and the seconds it all took."""
    results: list[tuple[float, int]] = []

    async def one_customer(customer: Customer) -> None:
        data = {"csrfmiddlewaretoken": csrf(customer.session)}
        for _request in range(per_customer):
            began = time.perf_counter()
            status = await post(customer.session, url, data)
            results.append((time.perf_counter() - began, status))

    began = time.perf_counter()
    await asyncio.gather(*map(one_customer, customers))
    return results, time.perf_counter() - began


async def floor_activations(customers: list[Customer], *, per_customer: int, meter: CpuMeter):
    """Signed-in customers each start ``per_customer`` floor activations (``bench/tasks.py``).

    Each is a POST to ``/_bench/floor-submit`` (what every customer POST costs, as the
    signed-in baseline, then one INSERT and the delivery queued) and the two tasks it sets off;
    the CPU is read once all of them have written their rows, so it covers the tasks too.
    """
    with psycopg.connect(f"{PG}/{DB_NAME}", autocommit=True) as db:

        def probe_rows() -> int:
            return db.execute("SELECT count(*) FROM bench_probe").fetchone()[0]

        expected = probe_rows() + 3 * per_customer * len(customers)  # the submit's row, the tasks'
        meter.start()
        results, elapsed = await signed_in_posts(customers, "/_bench/floor-submit", per_customer)
        deadline = time.monotonic() + 300
        while probe_rows() < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        cpu = meter.per_request(len(results))
        if probe_rows() < expected:
            raise SystemExit("the floor activations' tasks did not all run")
    return figures(results, elapsed) | {"cpu_ms_per_activation": cpu}


def wait_until_settled(timeout: float = 600) -> float:
    """Wait until no case is being submitted or awaiting the core; answer how long that took."""
    began = time.monotonic()
    with psycopg.connect(f"{PG}/{DB_NAME}") as db:
        while time.monotonic() - began < timeout:
            in_flight = db.execute(
                "SELECT count(*) FROM activation_activationcase "
                "WHERE state IN ('submitting', 'awaiting_confirmation')"
            ).fetchone()[0]
            if in_flight == 0:
                break
            time.sleep(0.25)
    return round(time.monotonic() - began, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200, help="concurrent customers per group")
    parser.add_argument(
        "--think",
        type=float,
        nargs=2,
        default=(5.0, 15.0),
        metavar=("MIN", "MAX"),
        help="seconds a customer of the paced group takes to read the SMS and type the code",
    )
    parser.add_argument("--capacity", type=int, default=3, help="core's concurrent capacity")
    parser.add_argument("--core-latency-ms", type=int, default=50, help="core's added latency")
    parser.add_argument("--gunicorn-workers", type=int, default=4)
    parser.add_argument("--gunicorn-threads", type=int, default=8)
    parser.add_argument("--output", default=str(ROOT / "var" / "bench-surge.json"))
    options = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="surge-"))
    env = environment(workdir)
    print(f"preparing {2 * options.users} customers in {DB_NAME} …", flush=True)
    prepare_database(env, 2 * options.users)
    subprocess.run(["redis-cli", "-n", "15", "flushdb"], check=True, capture_output=True)
    python = sys.executable
    processes = [
        start(
            "core simulator",
            [
                python,
                "manage.py",
                "run_core_simulator",
                f"--port={CORE_PORT}",
                f"--capacity={options.capacity}",
                f"--latency-ms={options.core_latency_ms}",
                "--pending-rate=0.3",
                "--callback-delay-seconds=1",
                f"--callback-url=http://127.0.0.1:{WEB_PORT}/api/v1/core/events/",
            ],
            env,
            workdir / "core.log",
        ),
        start(
            "web",
            [
                python,
                "-m",
                "gunicorn",
                "portal.wsgi",
                f"--bind=127.0.0.1:{WEB_PORT}",
                f"--workers={options.gunicorn_workers}",
                "--worker-class=gthread",
                f"--threads={options.gunicorn_threads}",
                "--backlog=2048",
                "--keep-alive=75",
                "--access-logfile=-",
            ],
            env,
            workdir / "web.log",
        ),
        *(
            start(
                "workers",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "portal",
                    "worker",
                    "--concurrency=2",
                    f"--hostname=bench{n}@%h",
                    "--without-mingle",
                    "--without-gossip",
                    "--loglevel=WARNING",
                ],
                env,
                workdir / f"worker{n}.log",
            )
            for n in (1, 2)
        ),
        start(
            "beat",
            [
                python,
                "-m",
                "celery",
                "-A",
                "portal",
                "beat",
                f"--schedule={workdir / 'beat'}",
                "--loglevel=WARNING",
            ],
            env,
            workdir / "beat.log",
        ),
    ]
    base = f"http://127.0.0.1:{WEB_PORT}"
    try:
        wait_for(base + "/healthz")
        wait_for(f"http://127.0.0.1:{CORE_PORT}/_sim/stats")
        # Each process leads its own group, so its group id is its pid.
        meter = CpuMeter({process.pid: role for role, process in processes})
        bare = asyncio.run(bare_view(base, options.users, 10, meter))
        print("bare INSERT view:", bare, flush=True)
        submits = asyncio.run(
            surge(base, options.users, Path(env["SMS_FILE_PATH"]), tuple(options.think), meter)
        )
        print("code submits:    ", submits, flush=True)
        with psycopg.connect(f"{PG}/{DB_NAME}") as db:
            states = dict(
                db.execute(
                    "SELECT state, count(*) FROM activation_activationcase GROUP BY state"
                ).fetchall()
            )
        core = httpx.get(f"http://127.0.0.1:{CORE_PORT}/_sim/stats", timeout=10).json()
    finally:
        for _role, process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for _role, process in processes:
            process.wait(timeout=30)

    web_5xx = sum(
        1 for line in (workdir / "web.log").read_text().splitlines() if re.search(r'" 5\d\d ', line)
    )
    result = {
        "machine": {"cores": os.cpu_count()},
        "users": options.users,
        "gunicorn": {"workers": options.gunicorn_workers, "threads": options.gunicorn_threads},
        "bare_view": bare,
        **submits,
        "throughput_ratio_burst_to_bare": round(
            submits["burst"]["throughput_per_s"] / bare["throughput_per_s"], 3
        ),
        # CPU of the portal's processes (web, workers, beat, PostgreSQL, Redis) ÷ a bare request's.
        "cpu_ratio_settled_activation_to_bare": round(
            portal_cpu(submits["burst"]["cpu_ms_per_submit_until_settled"])
            / portal_cpu(bare["cpu_ms_per_request"]),
            1,
        ),
        "cpu_ratio_floor_activation_to_bare": round(
            portal_cpu(submits["floor_activation"]["cpu_ms_per_activation"])
            / portal_cpu(bare["cpu_ms_per_request"]),
            1,
        ),
        "throughput_ratio_floor_activation_to_signed_in_nothing": round(
            submits["floor_activation"]["throughput_per_s"]
            / submits["signed_in_nothing"]["throughput_per_s"],
            3,
        ),
        "throughput_ratio_signed_in_nothing_to_bare": round(
            submits["signed_in_nothing"]["throughput_per_s"] / bare["throughput_per_s"], 3
        ),
        "final_states": states,
        "duplicate_activations": sum(1 for n in core["activations"].values() if n > 1),
        "core_requests": core["requests"],
        "core_turned_away_429": core["turned_away"],
        "web_5xx_in_access_log": web_5xx,
    }
    Path(options.output).parent.mkdir(parents=True, exist_ok=True)
    Path(options.output).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
