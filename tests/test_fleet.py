"""The fleet run's short version: the whole fleet on this machine, a web node killed and the broker
restarted while customers activate through HAProxy (bench/fleet.py; `make fleet` is the long one).
"""

import json
import shutil
import subprocess
import sys

import psycopg
import pytest

from .fixtures import ROOT, require

CUSTOMERS = 40


def rabbitmq_answers() -> bool:
    if not shutil.which("rabbitmqctl"):
        return False
    status = subprocess.run(["rabbitmqctl", "-q", "await_startup"], capture_output=True, timeout=60)
    return status.returncode == 0


def postgres_answers() -> bool:
    try:
        with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.mark.redis
def test_the_fleet_loses_no_activation_when_a_web_node_dies_and_the_broker_restarts(tmp_path):
    for program in ("haproxy", "pgbouncer", "openssl"):
        require(shutil.which(program) is not None, f"Debian's {program}")
    require(rabbitmq_answers(), "RabbitMQ on 127.0.0.1:5672")
    require(postgres_answers(), "PostgreSQL on 127.0.0.1:5432")
    output = tmp_path / "fleet.json"
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.fleet",
            "--short",
            f"--customers={CUSTOMERS}",
            "--seconds=30",
            f"--output={output}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert output.exists(), finished.stdout[-3000:] + finished.stderr[-3000:]
    result = json.loads(output.read_text())
    assert result["problems"] == [], result
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    # What the harness checked, checked again from its report.
    cases = result["final"]["cases"]
    assert sum(cases.values()) == CUSTOMERS
    assert set(cases) <= {"activated", "needs_review"}
    assert result["duplicate_activations_at_core"] == 0
    assert set(result["final"]["outbox"]) <= {"succeeded", "failed"}
    assert result["chains"].endswith("0 broken.")
    failures = sorted(failover["failure"] for failover in result["failovers"])
    assert failures == ["kill_web_node", "restart_rabbitmq"]
    for failover in result["failovers"]:
        # Every request that failed got through when repeated once, as a browser repeats it.
        assert failover["requests_failed_after_one_retry"] == 0, failover
    # One beat sent the periodic jobs: never about twice per period.
    sweep = result["periodic"]["activation.tasks.sweep_core_outbox"]
    assert 0 < sweep["ran"] <= sweep["periods"] + 2
