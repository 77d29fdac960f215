"""API benchmark: the case-status endpoint against a bare one-query DRF view, in one run.

    python -m bench.api_status --clients 50 --requests 40

Runs the portal as in production (gunicorn gthread, DEBUG off, Redis cache, PostgreSQL), signs
customers in through ``POST /api/v1/auth/token/`` and then, alternating twice, has ``--clients``
concurrent clients each GET ``--requests`` times (a) ``/_bench/drf-one-query/<id>``: DRF, no
authentication, one indexed read (``bench/urls.py``), and (b) ``/api/v1/cases/<id>/``: the
app's status call, with its bearer token and installation header. Reports throughput, latency
and the ratio (b) ÷ (a), and the queries one status call makes (counted in a child process).
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
    ROOT,
    WEB_PORT,
    environment,
    json_from_child,
    percentile,
    prepare_database,
    start,
    wait_for,
)

BASE = f"http://127.0.0.1:{WEB_PORT}"


def sign_in_all(customers: int) -> list[dict]:
    """Each customer's headers and case id, signed in through the API."""
    signed_in = []
    with httpx.Client(base_url=BASE, timeout=30) as client:
        for n in range(customers):
            installation = f"bench-installation-{n:06d}"
            answer = client.post(
                "/api/v1/auth/token/",
                json={"username": f"bench{n}", "password": BENCH_PASSWORD, "platform": "android"},
                headers={"X-Installation-Id": installation},
            )
            answer.raise_for_status()
            headers = {
                "Authorization": f"Bearer {answer.json()['access']}",
                "X-Installation-Id": installation,
            }
            lines = client.get("/api/v1/credit-lines/", headers=headers).json()
            signed_in.append({"headers": headers, "case": lines[0]["cases"][0]["id"]})
    return signed_in


async def load(customers: list[dict], clients: int, requests: int, path: str) -> dict:
    latencies: list[float] = []
    statuses: list[int] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(base_url=BASE, connector=connector) as session:

        async def one_client(customer: dict) -> None:
            url = path.format(case=customer["case"])
            for _ in range(requests):
                began = time.perf_counter()
                async with session.get(url, headers=customer["headers"]) as response:
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
headers = json.loads(sys.argv[-1])
client = Client(HTTP_HOST="localhost")
path = f"/api/v1/cases/{headers['case']}/"
kwargs = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers["headers"].items()}
client.get(path, **kwargs)
with CaptureQueriesContext(connection) as queries:
    status = client.get(path, **kwargs).status_code
print(json.dumps({"status": status, "queries": len(queries)}))
"""


def count_queries(env: dict[str, str], customer: dict) -> dict:
    script = "import json, sys, django; django.setup()\n" + QUERY_COUNT
    return json_from_child(["-c", script, json.dumps(customer)], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40)
    options = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="api-status-"))
    env = environment(workdir)
    env.update(API_ACCESS_TOKEN_MINUTES="60")  # noqa: S106 - outlives the run
    prepare_database(env, options.customers)
    subprocess.run(["redis-cli", "-n", "15", "flushdb"], check=True, capture_output=True)
    _role, web = start(
        "web",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "portal.wsgi",
            "--config=deploy/gunicorn.conf.py",
            f"--bind=127.0.0.1:{WEB_PORT}",
        ],
        {**env, "PYTHONPATH": str(ROOT)},
        workdir / "web.log",
    )
    try:
        wait_for(f"{BASE}/healthz")
        customers = sign_in_all(options.customers)
        rounds = {"bare": [], "status": []}
        paths = {"bare": "/_bench/drf-one-query/{case}", "status": "/api/v1/cases/{case}/"}
        for path in paths.values():  # warm every worker on both paths
            asyncio.run(load(customers, options.clients, 5, path))
        for _round in range(2):
            for name in ("bare", "status"):
                rounds[name].append(
                    asyncio.run(load(customers, options.clients, options.requests, paths[name]))
                )
        queries = count_queries(env, customers[0])
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
        "rounds": rounds,
        "status_call": queries,
        "ratio_status_to_bare": round(throughput["status"] / throughput["bare"], 3),
    }
    (ROOT / "var" / "bench-api-status.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
