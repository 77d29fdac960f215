"""Schemathesis against the running app on PostgreSQL: every operation of /api/v1/schema/, its
examples and generated inputs, as a signed-in customer (their token from the real sign-in
endpoint) and a staff tool (a staff token): no server error, and every response, status code
and content type as the document says.

Run on its own: see README.md, "API".
"""

import hashlib
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.utils import timezone

from api.models import StaffToken
from tests.factories import PASSWORD, CustomerFactory, StaffFactory, open_failed_case

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

CHECKS = ",".join(
    [
        "not_a_server_error",
        "response_schema_conformance",
        "status_code_conformance",
        "content_type_conformance",
    ]
)
INSTALLATION = "fuzz-installation-0001"
STAFF_TOKEN = "ars_fuzzprefix_" + "s" * 40  # seeded for this test only
# Small enough for the whole run to take well under two minutes on two cores.
MAX_EXAMPLES = 8


@pytest.fixture
def seeded(live_server) -> dict[str, dict[str, str]]:
    """A customer with a case, signed in through the API, and a staff token: their headers."""
    customer = CustomerFactory()
    open_failed_case(customer)
    answer = httpx.post(
        f"{live_server.url}/api/v1/auth/token/",
        json={"username": customer.username, "password": PASSWORD, "platform": "android"},
        headers={"X-Installation-Id": INSTALLATION},
        timeout=10,
    )
    assert answer.status_code in (200, 201), answer.text
    staff = StaffFactory(role="supervisor")
    StaffToken.objects.create(
        user=staff,
        name="fuzz",
        scopes=[scope.value for scope in StaffToken.Scope],
        prefix="fuzzprefix",
        key_hash=hashlib.sha256(STAFF_TOKEN.encode()).hexdigest(),
        expires_at=timezone.now() + timedelta(days=1),
    )
    return {
        "customer": {
            "Authorization": f"Bearer {answer.json()['access']}",
            "X-Installation-Id": INSTALLATION,
        },
        "staff": {"Authorization": f"Bearer {STAFF_TOKEN}"},
    }


def schemathesis_run(url: str, headers: dict[str, str], *paths: str) -> list[str]:
    """The ``st run`` command for the operations under ``paths`` (a regular expression)."""
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{url}/api/v1/schema/",
        "--url",
        url,
        "--checks",
        CHECKS,
        "--phases",
        "examples,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--seed",
        "14",
        "--workers",
        "2",
        "--request-timeout",
        "10",
        "--no-color",
        *[option for name, value in headers.items() for option in ("-H", f"{name}: {value}")],
        *paths,
    ]
    return command


def _run(command: list[str], workdir: Path) -> None:
    # In a temporary folder: st writes its .schemathesis/ cache where it runs.
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=240, check=False, cwd=workdir
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]


def test_the_staff_operations_keep_to_the_document(live_server, seeded, tmp_path):
    _run(
        schemathesis_run(
            live_server.url, seeded["staff"], "--include-path-regex", "^/api/v1/staff/"
        ),
        tmp_path,
    )


def test_the_customer_operations_keep_to_the_document(live_server, seeded, tmp_path):
    _run(
        schemathesis_run(
            live_server.url,
            seeded["customer"],
            "--exclude-path-regex",
            "^/api/v1/staff/",
            # Signing out (DELETE auth/sessions/{id}) could end the very session the run uses,
            # leaving every later operation a 401: it has a run of its own, below.
            "--exclude-method",
            "DELETE",
        ),
        tmp_path,
    )


def test_signing_out_keeps_to_the_document(live_server, seeded, tmp_path):
    _run(
        schemathesis_run(
            live_server.url,
            seeded["customer"],
            "--exclude-path-regex",
            "^/api/v1/staff/",
            "--include-method",
            "DELETE",
        ),
        tmp_path,
    )
