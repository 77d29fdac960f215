"""Surge benchmark: N customers sign in and submit a retry at once; compare with a bare INSERT.

Runs gunicorn, two Celery workers, beat and the core simulator (with a capacity limit) on
PostgreSQL and Redis, then drives them from one asyncio client. Usage:

    python -m bench.surge --users 200 --rounds 2
"""

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
DB_NAME = "activation_rescue_bench"
PG = "postgres://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/15"
WEB_PORT, CORE_PORT = 8765, 8766
PASSWORD = "bench-password-123"  # noqa: S105


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def environment(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "TEST_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="bench.settings",
        DATABASE_URL=f"{PG}/{DB_NAME}",
        CELERY_BROKER_URL=REDIS,
        CACHE_URL=REDIS.replace("redis://", "rediscache://"),
        CORE_API_URL=f"http://127.0.0.1:{CORE_PORT}",
        SMS_BACKEND="verification.sms.FileBackend",
        SMS_FILE_PATH=str(workdir / "sms.jsonl"),
        PORTAL_VAR_DIR=str(workdir),
        ACTIVATION_RETRY_RATE_PER_IP="1000000/m",  # every virtual customer shares 127.0.0.1
        ACTIVATION_SWEEP_INTERVAL_SECONDS="2",
        ACTIVATION_RECONCILE_INTERVAL_SECONDS="5",
        ACTIVATION_CONFIRMATION_POLL_AFTER_SECONDS="5",
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="WARNING",
    )
    return env


def prepare_database(env: dict[str, str], customers: int) -> None:
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DB_NAME}")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
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


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit(f"{url} did not come up")


def csrf(client: httpx.AsyncClient) -> str:
    return client.cookies.get("csrftoken", "")


async def bare_view(base: str, users: int, per_user: int) -> dict:
    latencies: list[float] = []
    statuses: list[int] = []

    async def one_user() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            for _request in range(per_user):
                began = time.perf_counter()
                response = await client.post("/_bench/insert")
                latencies.append(time.perf_counter() - began)
                statuses.append(response.status_code)

    began = time.perf_counter()
    await asyncio.gather(*(one_user() for _ in range(users)))
    elapsed = time.perf_counter() - began
    return summary(latencies, statuses, elapsed)


def summary(latencies: list[float], statuses: list[int], elapsed: float) -> dict:
    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 2),
        "throughput_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "mean_ms": round(statistics.mean(latencies) * 1000, 1),
        "status_5xx": sum(1 for s in statuses if s >= 500),
        "status_other_errors": sum(1 for s in statuses if 400 <= s < 500),
    }


def sms_code(sms_file: Path, phone: str) -> str:
    for line in reversed(sms_file.read_text().splitlines()):
        message = json.loads(line)
        if message["to"] == phone:
            return re.search(r"\d{6}", message["body"]).group(0)
    raise LookupError(phone)


async def surge(base: str, users: int, rounds: int, sms_file: Path) -> dict:
    """Every virtual user signs in, asks for a code (not timed), then submits it (timed)."""
    sessions: list[tuple[httpx.AsyncClient, int, str]] = []
    gate = asyncio.Semaphore(users)

    async def sign_in_and_send(index: int) -> None:
        async with gate:
            client = httpx.AsyncClient(base_url=base, timeout=120)
            await client.get("/accounts/login/")
            await client.post(
                "/accounts/login/",
                data={
                    "username": f"bench{index}",
                    "password": PASSWORD,
                    "csrfmiddlewaretoken": csrf(client),
                },
            )
            listing = await client.get("/activation/")
            case_id = int(re.search(r"/activation/(\d+)/retry/", listing.text).group(1))
            await client.post(
                f"/activation/{case_id}/retry/",
                data={"action": "send", "channel": "sms", "csrfmiddlewaretoken": csrf(client)},
            )
            sessions.append((client, case_id, f"+86139{index:08d}"))

    await asyncio.gather(*(sign_in_and_send(i) for i in range(users * rounds)))
    latencies: list[float] = []
    statuses: list[int] = []
    failures: list[str] = []
    queue = list(sessions)

    async def submitter() -> None:
        while queue:
            client, case_id, phone = queue.pop()
            data = {
                "action": "verify",
                "code": sms_code(sms_file, phone),
                "submission_id": str(uuid.uuid4()),
                "csrfmiddlewaretoken": csrf(client),
            }
            began = time.perf_counter()
            status = 599  # the connection failed twice: counted with the server errors
            for _try in range(2):
                try:
                    response = await client.post(f"/activation/{case_id}/retry/", data=data)
                except httpx.TransportError as error:
                    # As a browser does when a kept-alive connection was closed under it; the
                    # form's submission id makes the repeat safe.
                    failures.append(type(error).__name__)
                    continue
                status = response.status_code
                break
            latencies.append(time.perf_counter() - began)
            statuses.append(status)

    began = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(users)))
    elapsed = time.perf_counter() - began
    for client, _case_id, _phone in sessions:
        await client.aclose()
    return {**summary(latencies, statuses, elapsed), "connections_retried": failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200, help="concurrent customers")
    parser.add_argument("--rounds", type=int, default=2, help="retries per virtual customer")
    parser.add_argument("--capacity", type=int, default=3, help="core's concurrent capacity")
    parser.add_argument("--gunicorn-workers", type=int, default=4)
    parser.add_argument("--output", default=str(ROOT / "var" / "bench-surge.json"))
    options = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="surge-"))
    env = environment(workdir)
    print(f"preparing {options.users * options.rounds} customers in {DB_NAME} …", flush=True)
    prepare_database(env, options.users * options.rounds)
    subprocess.run(["redis-cli", "-n", "15", "flushdb"], check=True, capture_output=True)
    python = sys.executable
    processes = [
        start(
            [
                python,
                "manage.py",
                "run_core_simulator",
                f"--port={CORE_PORT}",
                f"--capacity={options.capacity}",
                "--pending-rate=0.3",
                "--callback-delay-seconds=1",
                f"--callback-url=http://127.0.0.1:{WEB_PORT}/api/v1/core/events/",
            ],
            env,
            workdir / "core.log",
        ),
        start(
            [
                python,
                "-m",
                "gunicorn",
                "portal.wsgi",
                f"--bind=127.0.0.1:{WEB_PORT}",
                f"--workers={options.gunicorn_workers}",
                "--worker-class=gthread",
                "--threads=8",
                "--backlog=2048",
                "--access-logfile=-",
            ],
            env,
            workdir / "web.log",
        ),
        *(
            start(
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
        bare = asyncio.run(bare_view(base, options.users, 5))
        print("bare INSERT view:", bare, flush=True)
        submits = asyncio.run(
            surge(base, options.users, options.rounds, Path(env["SMS_FILE_PATH"]))
        )
        print("retry submits:  ", submits, flush=True)
        settle_began = time.monotonic()
        with psycopg.connect(f"{PG}/{DB_NAME}") as db:
            while True:
                open_cases = db.execute(
                    "SELECT count(*) FROM activation_activationcase "
                    "WHERE state IN ('submitting', 'awaiting_confirmation')"
                ).fetchone()[0]
                if open_cases == 0 or time.monotonic() - settle_began > 600:
                    break
                time.sleep(0.5)
            states = dict(
                db.execute(
                    "SELECT state, count(*) FROM activation_activationcase GROUP BY state"
                ).fetchall()
            )
        settle_seconds = time.monotonic() - settle_began
        core = httpx.get(f"http://127.0.0.1:{CORE_PORT}/_sim/stats", timeout=10).json()
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)

    web_5xx = sum(
        1 for line in (workdir / "web.log").read_text().splitlines() if re.search(r'" 5\d\d ', line)
    )
    result = {
        "machine": {"cores": os.cpu_count()},
        "users": options.users,
        "customers": options.users * options.rounds,
        "bare_view": bare,
        "submit": submits,
        "throughput_ratio_submit_to_bare": round(
            submits["throughput_per_s"] / bare["throughput_per_s"], 2
        ),
        "seconds_until_all_settled_after_last_submit": round(settle_seconds, 1),
        "final_states": states,
        "duplicate_activations": sum(1 for n in core["activations"].values() if n > 1),
        "core_requests": core["requests"],
        "web_5xx_in_access_log": web_5xx,
    }
    Path(options.output).parent.mkdir(parents=True, exist_ok=True)
    Path(options.output).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
