import math
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from activation.models import (
    OPEN_STATES,
    TERMINAL_STATES,
    ActorType,
    CaseState,
    CoreRequest,
    FailureReason,
)
from activation.services.emergency import set_core_submissions_paused
from activation.tests.helpers import submitted_case
from activation.transitions import transition
from portal.breaker import core_breaker, sms_gateway_breaker
from portal.metrics import render_metrics
from portal.tasks import stamp_worker_heartbeat
from tests.factories import CustomerFactory, open_failed_case, open_review_case

pytestmark = pytest.mark.django_db

# Fixed, not random: the parametrized ids below must be the same in every xdist worker.
TOKEN = "metrics-test-token-0123456789abcdefghijklmnop"
# Queries one scrape makes, whatever the data: open cases by state and reason, the open-case
# watch, the outbox backlog, the emergency switch.
QUERIES_PER_SCRAPE = 4


@pytest.fixture
def metrics_token(settings) -> str:
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client, token: str = TOKEN):
    return client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}")


def samples(text: str | bytes) -> dict[tuple[str, frozenset], float]:
    """Every sample on a metrics page, by name and labels."""
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(page: dict, name: str, **labels: str) -> float:
    return page[f"activation_rescue_{name}", frozenset(labels.items())]


# --- who may read them -------------------------------------------------------------------


def test_metrics_are_off_without_a_configured_token(client, settings):
    settings.METRICS_TOKEN = ""
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer ")
    assert response.status_code == 403
    assert b"activation_rescue" not in response.content


def test_metrics_ask_for_a_bearer_token(client, metrics_token):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"activation_rescue" not in response.content


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Bearer ",
        "Bearer    ",
        "bearer wrong-token",
        f"Basic {TOKEN}",
        TOKEN,
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer " + "x" * 100_000,
        "Bearer 令牌令牌令牌",
        "Bearer \udcff\x00",
        "Bearer\t" + TOKEN,
        "Token " + TOKEN,
    ],
    ids=lambda header: header[:24],
)
def test_a_wrong_or_malformed_token_gets_401_never_an_error(client, metrics_token, authorization):
    response = client.get("/metrics", HTTP_AUTHORIZATION=authorization)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"activation_rescue" not in response.content


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_configured_token_reads_the_metrics(client, metrics_token, scheme):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"{scheme} {TOKEN}")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "no-cache" in response["Cache-Control"]
    assert value(samples(response.content), "core_submissions_paused") == 0


def test_metrics_only_answer_get(client, metrics_token):
    response = client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 405


# --- what they say -----------------------------------------------------------------------


def test_an_empty_portal_reports_zeros_for_every_state_and_reason(client, metrics_token):
    page = samples(scrape(client).content)
    for state in OPEN_STATES:
        assert value(page, "open_cases", state=state) == 0
    for state in TERMINAL_STATES:
        assert ("activation_rescue_open_cases", frozenset({("state", state)})) not in page
    for state in (CaseState.FAILED, CaseState.NEEDS_REVIEW):
        for reason in FailureReason.values:
            assert (
                value(page, "open_cases_by_failure_reason", state=state, failure_reason=reason) == 0
            )
    assert value(page, "outbox_due_requests") == 0
    assert value(page, "outbox_in_flight_requests") == 0
    assert value(page, "outbox_oldest_due_age_seconds") == 0
    assert value(page, "cases_past_sla") == 0
    assert value(page, "review_cases_unassigned") == 0
    assert value(page, "cases_awaiting_confirmation_past_poll_time") == 0
    assert value(page, "worker_heartbeat_age_seconds") == math.inf


def test_cases_are_counted_by_state_and_failure_reason(client, metrics_token, agent):
    for _case in range(3):
        open_failed_case(reason=FailureReason.DELIVERY_FAILED)
    open_failed_case(reason=FailureReason.CODE_EXPIRED)
    open_review_case(reason=FailureReason.CORE_UNAVAILABLE)
    assigned = open_review_case(reason=FailureReason.CORE_UNAVAILABLE)
    assigned.assignee = agent
    assigned.save(update_fields=["assignee"])

    page = samples(scrape(client).content)

    assert value(page, "open_cases", state="failed") == 4
    assert value(page, "open_cases", state="needs_review") == 2
    by_reason = {
        (dict(labels)["state"], dict(labels)["failure_reason"]): count
        for (name, labels), count in page.items()
        if name == "activation_rescue_open_cases_by_failure_reason" and count
    }
    assert by_reason == {
        ("failed", "delivery_failed"): 3,
        ("failed", "code_expired"): 1,
        ("needs_review", "core_unavailable"): 2,
    }
    assert value(page, "review_cases_unassigned") == 1


def test_outbox_rows_due_in_flight_and_the_oldest_due_age(
    client, metrics_token, django_capture_on_commit_callbacks, settings
):
    settings.ACTIVATION_DELIVERY_LEASE_SECONDS = 60
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        _case, waiting = submitted_case(CustomerFactory(), django_capture_on_commit_callbacks)
        _case, leased = submitted_case(CustomerFactory(), django_capture_on_commit_callbacks)
        _case, abandoned = submitted_case(CustomerFactory(), django_capture_on_commit_callbacks)
        _case, later = submitted_case(CustomerFactory(), django_capture_on_commit_callbacks)
        CoreRequest.objects.filter(pk=later.pk).update(next_attempt_at=start + timedelta(hours=1))
        # The abandoned delivery's lease ran out 30 s after the start: due since then.
        CoreRequest.objects.filter(pk=abandoned.pk).update(
            status=CoreRequest.Status.IN_FLIGHT, lease_expires_at=start + timedelta(seconds=30)
        )
        clock.shift(100)
        CoreRequest.objects.filter(pk=leased.pk).update(
            status=CoreRequest.Status.IN_FLIGHT,
            lease_expires_at=timezone.now() + timedelta(seconds=60),
        )
        page = samples(scrape(client).content)

    assert value(page, "outbox_due_requests") == 2  # waiting and abandoned
    assert value(page, "outbox_in_flight_requests") == 1
    assert value(page, "outbox_oldest_due_age_seconds") == pytest.approx(100)
    assert value(page, "open_cases", state="submitting") == 4
    assert waiting.status == CoreRequest.Status.PENDING


def test_cases_waiting_too_long_for_the_core_and_past_their_sla(
    client, metrics_token, django_capture_on_commit_callbacks, settings
):
    settings.ACTIVATION_CONFIRMATION_POLL_AFTER_SECONDS = 60
    settings.ACTIVATION_SLA_MINUTES = 15
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        long_waiting, _request = submitted_case(
            CustomerFactory(), django_capture_on_commit_callbacks
        )
        transition(long_waiting, to=CaseState.AWAITING_CONFIRMATION, actor_type=ActorType.CORE)
        clock.shift(10 * 60)
        just_waiting, _request = submitted_case(
            CustomerFactory(), django_capture_on_commit_callbacks
        )
        transition(just_waiting, to=CaseState.AWAITING_CONFIRMATION, actor_type=ActorType.CORE)
        clock.shift(30)
        page = samples(scrape(client).content)
        assert value(page, "cases_awaiting_confirmation_past_poll_time") == 1
        assert value(page, "cases_past_sla") == 0

        clock.shift(6 * 60)  # the first case's 15 minutes are over, the second's not
        page = samples(scrape(client).content)
        assert value(page, "cases_awaiting_confirmation_past_poll_time") == 2
        assert value(page, "cases_past_sla") == 1

        # A settled case past its SLA is no longer counted.
        transition(long_waiting, to=CaseState.ACTIVATED, actor_type=ActorType.CORE)
        page = samples(scrape(client).content)
        assert value(page, "cases_past_sla") == 0
        assert value(page, "cases_awaiting_confirmation_past_poll_time") == 1
        assert value(page, "open_cases", state="awaiting_confirmation") == 1


def test_the_emergency_switch_shows_as_one_while_paused(client, metrics_token, supervisor):
    set_core_submissions_paused(paused=True, actor=supervisor, reason="core maintenance")
    assert value(samples(scrape(client).content), "core_submissions_paused") == 1
    set_core_submissions_paused(paused=False, actor=supervisor, reason="maintenance over")
    assert value(samples(scrape(client).content), "core_submissions_paused") == 0


def breaker_states(page: dict, breaker: str) -> dict[str, float]:
    return {
        state: value(page, "circuit_breaker_state", breaker=breaker, state=state)
        for state in ("closed", "open", "half_open")
    }


def test_each_breaker_shows_one_on_its_current_state(client, metrics_token, settings):
    settings.CORE_BREAKER_FAILURE_THRESHOLD = 2
    settings.CORE_BREAKER_RESET_SECONDS = 30
    page = samples(scrape(client).content)
    assert breaker_states(page, "core") == {"closed": 1, "open": 0, "half_open": 0}
    assert breaker_states(page, "sms_gateway") == {"closed": 1, "open": 0, "half_open": 0}

    for _failure in range(2):
        core_breaker().record_failure()
    page = samples(scrape(client).content)
    assert breaker_states(page, "core") == {"closed": 0, "open": 1, "half_open": 0}
    assert breaker_states(page, "sms_gateway") == {"closed": 1, "open": 0, "half_open": 0}

    with time_machine.travel(timezone.now() + timedelta(seconds=31)):
        page = samples(scrape(client).content)
    assert breaker_states(page, "core") == {"closed": 0, "open": 0, "half_open": 1}


def test_the_sms_gateway_breaker_is_reported_apart(client, metrics_token, settings):
    settings.SMS_GATEWAY_BREAKER_FAILURE_THRESHOLD = 1
    sms_gateway_breaker().record_failure()
    page = samples(scrape(client).content)
    assert breaker_states(page, "sms_gateway") == {"closed": 0, "open": 1, "half_open": 0}
    assert breaker_states(page, "core") == {"closed": 1, "open": 0, "half_open": 0}


def test_the_heartbeat_age_grows_from_the_last_stamp(client, metrics_token):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        stamp_worker_heartbeat.delay()
        clock.shift(45)
        page = samples(scrape(client).content)
    assert value(page, "worker_heartbeat_age_seconds") == pytest.approx(45)


def test_with_the_cache_down_the_database_gauges_are_still_served(client, metrics_token, settings):
    open_failed_case(reason=FailureReason.CODE_INVALID)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",
        }
    }
    response = scrape(client)
    assert response.status_code == 200
    page = samples(response.content)
    assert value(page, "open_cases", state="failed") == 1
    assert not any(name.endswith("circuit_breaker_state") for name, _labels in page)
    assert not any(name.endswith("worker_heartbeat_age_seconds") for name, _labels in page)


# --- what they cost ----------------------------------------------------------------------


def queries_for_one_scrape() -> int:
    with CaptureQueriesContext(connection) as queries:
        render_metrics()
    return len(queries)


def test_a_scrape_makes_the_same_few_queries_however_many_cases_there_are(
    django_capture_on_commit_callbacks,
):
    empty = queries_for_one_scrape()
    for reason in FailureReason.values:
        open_failed_case(reason=reason)
        open_review_case(reason=reason)
    for _case in range(3):
        submitted_case(CustomerFactory(), django_capture_on_commit_callbacks)
    assert empty == queries_for_one_scrape() == QUERIES_PER_SCRAPE
