"""Counters and histograms the code paths update, for Prometheus.

Every metric the portal counts is defined here, once, and each code path updates it in one line.
Label values come from enums and fixed lists only, never from what a client sent: each distinct
value is a time series of its own. Under gunicorn or a Celery prefork pool, set
``PROMETHEUS_MULTIPROC_DIR`` before start-up: each process then writes its values to a file
there and ``/metrics`` adds them up (``portal.metrics.render_metrics``).
"""

from collections.abc import Collection

from prometheus_client import Counter, Histogram

PREFIX = "activation_rescue_"
OTHER = "other"


def bounded(value: str, allowed: Collection[str]) -> str:
    """``value`` if it is one of ``allowed``, else ``"other"``: a label never takes free text."""
    return value if value in allowed else OTHER


def status_class(status_code: int) -> str:
    """``2xx`` … ``5xx`` for an HTTP status."""
    return f"{status_code // 100}xx" if 100 <= status_code < 600 else OTHER


code_requests = Counter(
    PREFIX + "code_requests",
    "Customers' requests for a verification code, by channel and what came of them "
    "(sent, delivery_failed, too_soon, too_many, held, step_up, started).",
    ["channel", "result"],
)
code_submits = Counter(
    PREFIX + "code_submits",
    "Codes (or passkey answers) customers submitted, by channel and check result.",
    ["channel", "result"],
)
case_transitions = Counter(
    PREFIX + "case_transitions",
    "Case state changes, by the state entered and the failure reason (empty if none).",
    ["to_state", "reason"],
)
core_requests = Counter(
    PREFIX + "core_requests",
    "HTTP calls to the core, by status class (2xx … 5xx, timeout, connection_error).",
    ["status_class"],
)
core_request_duration = Histogram(
    PREFIX + "core_request_duration_seconds",
    "How long each HTTP call to the core took, answered or not.",
)
sms_sends = Counter(
    PREFIX + "sms_sends",
    "Text messages handed to an SMS backend, by backend and result (ok, failed, breaker_open).",
    ["backend", "result"],
)
callbacks = Counter(
    PREFIX + "callbacks",
    "The core's callbacks, by outcome (accepted, duplicate, signature, timestamp, malformed).",
    ["outcome"],
)
risk_decisions = Counter(
    PREFIX + "risk_decisions",
    "Fraud checkpoint decisions, by decision and moment.",
    ["decision", "moment"],
)
celery_tasks = Counter(
    PREFIX + "celery_tasks",
    "Celery task runs, by task and outcome (success, failure, retry).",
    ["task", "outcome"],
)
celery_task_duration = Histogram(
    PREFIX + "celery_task_duration_seconds",
    "How long each Celery task run took.",
    ["task"],
)
http_requests = Counter(
    PREFIX + "http_requests",
    "HTTP requests served, by view (its URL name, or unmatched), method and status.",
    ["view", "method", "status"],
)
http_request_duration = Histogram(
    PREFIX + "http_request_duration_seconds",
    "How long each HTTP request took to answer, by view.",
    ["view"],
)
audit_chain_breaks = Counter(
    PREFIX + "audit_chain_breaks",
    "Broken audit chains the nightly verification found (each run counts each break again).",
)

ALL = (
    code_requests,
    code_submits,
    case_transitions,
    core_requests,
    core_request_duration,
    sms_sends,
    callbacks,
    risk_decisions,
    celery_tasks,
    celery_task_duration,
    http_requests,
    http_request_duration,
    audit_chain_breaks,
)
