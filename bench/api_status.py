"""Status benchmark: the customer's three status reads, each against its own bare baseline.

    python -m bench.api_status --clients 50 --requests 40

Runs the portal as in production (gunicorn with ``deploy/gunicorn.conf.py``, DEBUG off, Redis
cache, PostgreSQL) on a database and port of its own, seeds ``--customers`` customers with a stuck
case each (``--state submitting``, the default, moves them on through the state machine to an
activation in progress, the state in which pages poll), signs each in through the web's sign-in
form and through ``POST /api/v1/auth/token/``, and then, twice in turn, has ``--clients``
concurrent clients each GET ``--requests`` times the three pairs below, the bare view of a pair
just before its real one:

- page: ``/_bench/page-one-query/<id>`` (signed out, one indexed read, a tiny template;
  ``bench/urls.py``) and ``/activation/<id>/``, the status page, with the browser's cookies;
- json: ``/_bench/json-one-query/<id>`` (signed out, one indexed read, a ``JsonResponse``) and
  ``/activation/<id>/status/``, the JSON that pages which update in place poll;
- api: ``/_bench/drf-one-query/<id>`` (DRF, no authentication, one indexed read) and
  ``/api/v1/cases/<id>/``, the app's status call with its bearer token and installation header.

Between the bare view and the real one, each pair also measures its signed-in floor
(``bench/urls.py``): the bare view behind the real authentication, with the same headers as the
real read and the same indexed read narrowed to the customer's own cases, nothing else
(``/_bench/signed-in-page-one-query/<id>``, ``…-json-…``, ``…-drf-…``). Its ratio to the same
bare view is what authentication alone leaves of the budget, so no status read can reach
more than it without weakening authentication; ``--no-floors`` leaves them out.

Reports throughput, latency and the ratios real ÷ bare and floor ÷ bare of each pair, and the
queries one request of each path makes (counted in a child process with the same settings).
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

from bench.surge import PASSWORD as BENCH_PASSWORD
from bench.surge import (
    PG,
    REDIS,
    ROOT,
    WEB_PORT,
    environment,
    json_from_child,
    percentile,
    prepare_database,
    start,
    wait_for,
)

# Its own database and port, so that it never meets a surge run's.
DB_NAME = "activation_rescue_bench_status"
BASE = f"http://127.0.0.1:{WEB_PORT + 10}"

# name: (bare baseline, the real read); the customer's headers go with the real one only.
PAIRS = {
    "page": ("/_bench/page-one-query/{case}", "/activation/{case}/"),
    "json": ("/_bench/json-one-query/{case}", "/activation/{case}/status/"),
    "api": ("/_bench/drf-one-query/{case}", "/api/v1/cases/{case}/"),
}
HEADERS = {"page": "web", "json": "web", "api": "app"}
# Each pair's signed-in floor, measured against the same bare view with the real one's headers.
FLOORS = {
    "page": "/_bench/signed-in-page-one-query/{case}",
    "json": "/_bench/signed-in-json-one-query/{case}",
    "api": "/_bench/signed-in-drf-one-query/{case}",
}

# Moves every seeded case on to an activation in progress, through the state machine (each
# step a chained timeline event), as a verified customer's submission leaves it.
TO_SUBMITTING = """
from django.db import transaction
from activation.models import ActivationCase, ActorType, CaseState
from activation.transitions import transition
for case_id in ActivationCase.objects.values_list("pk", flat=True):
    with transaction.atomic():
        case = ActivationCase.objects.select_for_update().get(pk=case_id)
        for state, actor in ((CaseState.PENDING_VERIFICATION, ActorType.CUSTOMER),
                             (CaseState.SUBMITTING, ActorType.CUSTOMER)):
            transition(case, to=state, actor_type=actor, actor=case.credit_line.customer)
"""


def sign_in_all(customers: int) -> list[dict]:
    """Each customer's case id, app headers (signed in through the API) and browser cookies
    (signed in through the web's form)."""
    signed_in = []
    for n in range(customers):
        with httpx.Client(base_url=BASE, timeout=30) as client:
            installation = f"bench-installation-{n:06d}"
            answer = client.post(
                "/api/v1/auth/token/",
                json={"username": f"bench{n}", "password": BENCH_PASSWORD, "platform": "android"},
                headers={"X-Installation-Id": installation},
            )
            answer.raise_for_status()
            app = {
                "Authorization": f"Bearer {answer.json()['access']}",
                "X-Installation-Id": installation,
            }
            lines = client.get("/api/v1/credit-lines/", headers=app).json()
            client.get("/accounts/login/").raise_for_status()
            form = client.post(
                "/accounts/login/",
                data={
                    "username": f"bench{n}",
                    "password": BENCH_PASSWORD,
                    "csrfmiddlewaretoken": client.cookies["csrftoken"],
                },
            )
            if form.status_code != 302:
                raise SystemExit(f"bench{n} could not sign in on the web ({form.status_code})")
            cookies = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
            signed_in.append(
                {"case": lines[0]["cases"][0]["id"], "app": app, "web": {"Cookie": cookies}}
            )
    return signed_in


async def load(
    customers: list[dict], clients: int, requests: int, path: str, headers: str | None
) -> dict:
    """``clients`` concurrent clients each GET ``path`` ``requests`` times, with the customer's
    ``headers`` ("web", "app" or None for none)."""
    latencies: list[float] = []
    statuses: list[int] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        base_url=BASE, connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:

        async def one_client(customer: dict) -> None:
            url = path.format(case=customer["case"])
            sent = customer[headers] if headers else {}
            for _ in range(requests):
                began = time.perf_counter()
                async with session.get(url, headers=sent, allow_redirects=False) as response:
                    await response.read()
                    statuses.append(response.status)
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(one_client(customers[i % len(customers)]) for i in range(clients)))
        elapsed = time.perf_counter() - began
    return {
        "requests": len(latencies),
        "throughput_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
        "p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
        "not_200": sum(1 for s in statuses if s != 200),
    }


QUERY_COUNT = """
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
customer, paths, kinds = (json.loads(argument) for argument in sys.argv[-3:])
counts = {}
for key, path in paths.items():
    name, which = key.rsplit("_", 1)
    sent = customer[kinds[name]] if which != "bare" else {}
    client = Client(HTTP_HOST="localhost")
    kwargs = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in sent.items()}
    url = path.format(case=customer["case"])
    client.get(url, **kwargs)
    with CaptureQueriesContext(connection) as queries:
        status = client.get(url, **kwargs).status_code
    counts[key] = {"status": status, "queries": len(queries)}
print(json.dumps(counts))
"""


def count_queries(env: dict[str, str], customer: dict, paths: dict[str, str]) -> dict:
    """The queries of one request of each of ``paths`` (``<pair>_<bare|floor|real>``: path)."""
    script = "import json, sys, django; django.setup()\n" + QUERY_COUNT
    arguments = [json.dumps(customer), json.dumps(paths), json.dumps(HEADERS)]
    try:
        return json_from_child(["-c", script, *arguments], env)
    except subprocess.CalledProcessError as error:
        # Keep the run's throughput: say why the count failed instead of losing it all.
        return {"error": (error.stderr or "").strip().splitlines()[-1:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--state", choices=["failed", "submitting"], default="submitting")
    parser.add_argument("--pairs", default=",".join(PAIRS), help="which pairs, comma-separated")
    parser.add_argument("--redis-db", type=int, default=15, help="emptied at the start")
    parser.add_argument(
        "--no-floors", dest="floors", action="store_false", help="skip the signed-in floors"
    )
    options = parser.parse_args()
    pairs = {name: PAIRS[name] for name in options.pairs.split(",")}
    # Each round measures, per pair, the bare view, then its floor, then the real read.
    paths = {}
    for name, (bare, real) in pairs.items():
        paths[f"{name}_bare"] = bare
        if options.floors:
            paths[f"{name}_floor"] = FLOORS[name]
        paths[f"{name}_real"] = real
    workdir = Path(tempfile.mkdtemp(prefix="api-status-"))
    env = environment(workdir)
    redis = REDIS.rsplit("/", 1)[0] + f"/{options.redis_db}"
    env.update(
        API_ACCESS_TOKEN_MINUTES="60",  # noqa: S106 - outlives the run
        DATABASE_URL=f"{PG}/{DB_NAME}",
        CACHE_URL=redis.replace("redis://", "rediscache://"),
        CELERY_BROKER_URL=redis,
    )
    prepare_database(env, options.customers, database=DB_NAME)
    if options.state == "submitting":
        shell = [sys.executable, "manage.py", "shell", "-c", TO_SUBMITTING]
        subprocess.run(shell, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["redis-cli", "-n", str(options.redis_db), "flushdb"], check=True, capture_output=True
    )
    _role, web = start(
        "web",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "portal.wsgi",
            "--config=deploy/gunicorn.conf.py",
            f"--bind={BASE.removeprefix('http://')}",
        ],
        {**env, "PYTHONPATH": str(ROOT)},
        workdir / "web.log",
    )
    try:
        wait_for(f"{BASE}/healthz")
        customers = sign_in_all(options.customers)
        rounds: dict[str, list[dict]] = {key: [] for key in paths}

        def headers_of(key: str) -> str | None:
            name, which = key.rsplit("_", 1)
            return None if which == "bare" else HEADERS[name]

        for key, path in paths.items():  # warm every worker on every path
            asyncio.run(load(customers, options.clients, 5, path, headers_of(key)))
        for _round in range(2):
            for key, path in paths.items():
                rounds[key].append(
                    asyncio.run(
                        load(customers, options.clients, options.requests, path, headers_of(key))
                    )
                )
        queries = count_queries(env, customers[0], paths)
    finally:
        os.killpg(web.pid, 15)
        web.wait(timeout=30)
    throughput = {
        name: statistics.mean(r["throughput_per_s"] for r in results)
        for name, results in rounds.items()
    }
    result = {
        "machine": {"cores": os.cpu_count()},
        "clients": options.clients,
        "state": options.state,
        # "<pair>": real ÷ bare; "<pair>_floor": floor ÷ the same bare.
        "ratios": {
            (name if which == "real" else f"{name}_floor"): round(
                throughput[f"{name}_{which}"] / throughput[f"{name}_bare"], 3
            )
            for name in pairs
            for which in ("floor", "real")
            if f"{name}_{which}" in throughput
        },
        "queries": queries,
        "rounds": rounds,
    }
    (ROOT / "var" / "bench-api-status.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
