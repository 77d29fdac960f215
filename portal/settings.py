"""Settings, read once from the environment.

Development runs on embedded defaults (SQLite and a filesystem broker in ``var/``); production
(``PORTAL_ENV=production``) refuses to start on any insecure default.
"""

import ipaddress
import os
import re
from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab
from csp.constants import NONE as CSP_NONE
from csp.constants import SELF as CSP_SELF
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

env = environ.Env()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env.str("PORTAL_VAR_DIR", default=str(BASE_DIR / "var")))
VAR_DIR.mkdir(exist_ok=True)

PORTAL_ENV = env.str("PORTAL_ENV", default="development")
if PORTAL_ENV not in {"development", "production"}:
    raise ImproperlyConfigured(
        f"PORTAL_ENV must be 'development' or 'production', not {PORTAL_ENV!r}."
    )
PRODUCTION = PORTAL_ENV == "production"

_DEVELOPMENT_SECRET_KEY = "development-only-secret-key-never-use-in-production"  # noqa: S105
_DEVELOPMENT_CORE_TOKEN = "development-core-token"  # noqa: S105
# base64 of "development-webhook-secret-32byt"
_DEVELOPMENT_WEBHOOK_SECRET = "whsec_ZGV2ZWxvcG1lbnQtd2ViaG9vay1zZWNyZXQtMzJieXQ="  # noqa: S105

SECRET_KEY = env.str("SECRET_KEY", default=_DEVELOPMENT_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=not PRODUCTION)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[] if PRODUCTION else ["*"])

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one file in development: wait for locks instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
    DATABASES["default"].setdefault("CONN_HEALTH_CHECKS", True)
# Set when DATABASE_URL points at PgBouncer in transaction pooling mode (deploy/pgbouncer.ini):
# consecutive transactions of one connection may then run on different server connections, so
# nothing may outlive a transaction. No prepared statements; the server-side cursors behind
# ``.iterator()`` are only ever opened inside a transaction (portal.db.stream), the export's
# COPY and temporary table live in one, and advisory locks are transaction-scoped. See
# docs/deploy.md.
DATABASE_TRANSACTION_POOLING = env.bool("DATABASE_TRANSACTION_POOLING", default=False)
if DATABASE_TRANSACTION_POOLING:
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = None

CACHES = {"default": env.cache_url("CACHE_URL", default=f"filecache://{VAR_DIR / 'cache'}")}
if CACHES["default"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache":
    # Django's, with one Redis client per process instead of one per call (portal/cache.py).
    CACHES["default"]["BACKEND"] = "portal.cache.RedisCache"

if PRODUCTION:
    problems = []
    if SECRET_KEY == _DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
        problems.append("SECRET_KEY must be set to a random value of at least 50 characters")
    if DEBUG:
        problems.append("DEBUG must be off")
    if not ALLOWED_HOSTS:
        problems.append("ALLOWED_HOSTS must name the hosts this portal serves")
    if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        problems.append("DATABASE_URL must point at PostgreSQL, not SQLite")
    if "redis" not in CACHES["default"]["BACKEND"].lower():
        problems.append("CACHE_URL must point at Redis (rate limits and the circuit breaker)")
    if env.str("CORE_API_TOKEN", default="") in {"", _DEVELOPMENT_CORE_TOKEN}:
        problems.append("CORE_API_TOKEN must be set")
    if env.str("CORE_WEBHOOK_SECRET", default="") in {"", _DEVELOPMENT_WEBHOOK_SECRET}:
        problems.append("CORE_WEBHOOK_SECRET must be set")
    if "SMS_BACKEND" not in os.environ:
        # The default writes codes and numbers to a file: a forgotten setting must not do that.
        problems.append("SMS_BACKEND must be set (verification.sms.HttpGatewayBackend)")
    if not env.str("WEBAUTHN_RP_ID", default="") or not env.list("WEBAUTHN_ORIGINS", default=[]):
        problems.append("WEBAUTHN_RP_ID and WEBAUTHN_ORIGINS must name the passkeys' domain")
    if "TRUSTED_PROXY_COUNT" not in os.environ:
        # Behind a load balancer with the default 0, every customer would share the balancer's
        # address in lock-outs, rate limits and the risk rules; set it to the number of proxies
        # (0 only for a node that faces the internet itself).
        problems.append(
            "TRUSTED_PROXY_COUNT must be set to the number of load balancers in front (0 if none)"
        )
    if problems:
        raise ImproperlyConfigured("Refusing to start in production: " + "; ".join(problems) + ".")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "django_otp_webauthn",
    "phonenumber_field",
    "pgtrigger",
    "axes",
    "django_ratelimit",
    "accounts",
    "audit",
    "verification",
    "activation",
    "risk",
    "api",
]

MIDDLEWARE = [
    # Outermost, so it times the whole answer: requests by view, method and status.
    "portal.middleware.RequestMetricsMiddleware",
    # First: everything after it reads the client's address from request.client_ip.
    "portal.middleware.ClientAddressMiddleware",
    # Every log line of the request carries its id (X-Request-ID, see TRUSTED_PROXY_COUNT).
    "portal.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    # Before sessions and CSRF: a method or query the back office has no page for stops here.
    "portal.middleware.BackofficeRequestMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "risk.middleware.DeviceMiddleware",
    # Sets the secret "known browser" cookie a sign-in or a password reset earned.
    "accounts.limits.KnownBrowserMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # After the user, the second factor and messages: it ends stale staff sessions.
    "portal.middleware.StaffSessionMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into the lock-out page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                # base.html's links, static files and languages, worked out once per process.
                "portal.context_processors.layout",
            ],
        },
    },
]

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    # django-axes first: it refuses sign-ins from a locked-out address and account.
    "axes.backends.AxesStandaloneBackend",
    "accounts.backends.PhoneOrUsernameBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = env.float("AXES_COOLOFF_HOURS", default=0.25)
# Lock the pair (client address, account), never the account alone: a per-account lock-out lets
# anyone lock any customer out by typing wrong passwords for their number. Guessing from many
# addresses is left to the rate limits below and the risk checkpoint. The account is the
# normalised identity, so every spelling of one phone number (and the username) shares one count.
AXES_LOCKOUT_PARAMETERS = [["ip_address", "username"]]
AXES_USERNAME_CALLABLE = "accounts.backends.sign_in_identity"
# An IPv6 client counts by its /64 (one subscriber holds the whole block and could take a fresh
# address for every guess), IPv4 by its address; the timeline still records the full address.
AXES_CLIENT_IP_CALLABLE = "portal.middleware.client_address_block"
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"


def _rate(name: str, default: str) -> str:
    """Read a django-ratelimit rate ("30/10m": 30 per 10 minutes), refusing a malformed one."""
    value = env.str(name, default=default)
    if not re.fullmatch(r"[1-9]\d*/(?:[1-9]\d*)?[smhd]", value):
        raise ImproperlyConfigured(f"{name} must be a rate such as 30/10m or 3/h, not {value!r}.")
    return value


# Sign-in POSTs per client address (an IPv6 /64), the customer and back-office pages together;
# beyond it a friendly 429 page says when to try again. Roomy for a household or an office behind
# one address, tight for a script.
ACCOUNTS_SIGN_IN_RATE_PER_IP = _rate("ACCOUNTS_SIGN_IN_RATE_PER_IP", "30/10m")
# The per-account ceiling across addresses, and the trade-off it makes. Wrong passwords for one
# account, from every address together, count against this rate. Past it, sign-ins to that
# account are refused with the 429 page, password unchecked, until the window ends (at most 15
# minutes with the default) -- except from a browser that has signed in to that account before
# or reset its password there by SMS code (a secret token cookie, not the device id, remembered
# ACCOUNTS_SIGN_IN_KNOWN_DEVICE_DAYS), which an attacker cannot present. So guessing from any
# number of addresses gets at most this many tries a window, while the real user on their own
# phone or computer is never locked out, and on a new one either waits or resets the password by
# SMS. A per-account lock-out would instead let anyone lock any customer out with a few wrong
# passwords. Counted for any typed account, existing or not, so a refusal tells nothing about
# who has one.
ACCOUNTS_SIGN_IN_FAILURES_PER_ACCOUNT = _rate("ACCOUNTS_SIGN_IN_FAILURES_PER_ACCOUNT", "20/15m")
ACCOUNTS_SIGN_IN_KNOWN_DEVICE_DAYS = env.int("ACCOUNTS_SIGN_IN_KNOWN_DEVICE_DAYS", default=90)
# Password-reset requests per client address (an IPv6 /64) and per phone number, normalised;
# the per-number limit counts numbers with and without an account alike, so it reveals nothing.
ACCOUNTS_PASSWORD_RESET_RATE_PER_IP = _rate("ACCOUNTS_PASSWORD_RESET_RATE_PER_IP", "10/h")
ACCOUNTS_PASSWORD_RESET_RATE_PER_NUMBER = _rate("ACCOUNTS_PASSWORD_RESET_RATE_PER_NUMBER", "3/h")

# How many proxies of our own (load balancers) stand in front of the web nodes. Each appends the
# address it saw to X-Forwarded-For; with 0 the header is ignored, since then the client wrote it.
# Lock-outs, rate limits, the timeline and the audit trail use the address this resolves.
_trusted_proxies = env.str("TRUSTED_PROXY_COUNT", default="0").strip()
if not _trusted_proxies.isdigit():
    # Also an empty value: "set, but to nothing" is no answer to how many proxies stand in front.
    raise ImproperlyConfigured(
        f"TRUSTED_PROXY_COUNT must be a whole number, 0 or more, not {_trusted_proxies!r}."
    )
TRUSTED_PROXY_COUNT = int(_trusted_proxies)
# Where the nearest of those proxies connects from: X-Forwarded-For and X-Request-ID are believed
# only from there. The private networks by default, where load balancers live.
try:
    TRUSTED_PROXY_NETWORKS = [
        ipaddress.ip_network(network.strip())
        for network in env.list(
            "TRUSTED_PROXY_NETWORKS",
            default=[
                "127.0.0.0/8",
                "::1/128",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "fc00::/7",
            ],
        )
    ]
except ValueError as error:
    raise ImproperlyConfigured(f"TRUSTED_PROXY_NETWORKS: {error}.") from error
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "activation:list"
LOGOUT_REDIRECT_URL = "home"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "Asia/Shanghai"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Development and tests serve static files straight from the source folders.
WHITENOISE_USE_FINDERS = not PRODUCTION
WHITENOISE_AUTOREFRESH = DEBUG
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Sessions are read on every signed-in request: from the cache (Redis in production), with the
# database behind it so that a cache flush signs nobody out.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

# Security: strict in production, relaxed only where development needs plain HTTP.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=PRODUCTION)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if PRODUCTION else None
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]

# Content-Security-Policy (django-csp): every script and style is a file from our own origin, so
# an injected <script>, style attribute or on* handler does nothing. Templates therefore carry no
# inline script or style (tests/browser/test_content_security_policy.py loads every main page).
# The QR codes are inline SVG markup, which needs no source of its own.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [CSP_SELF],
        "script-src": [CSP_SELF],
        "style-src": [CSP_SELF],
        "img-src": [CSP_SELF],
        "font-src": [CSP_SELF],
        "connect-src": [CSP_SELF],
        "object-src": [CSP_NONE],
        "base-uri": [CSP_NONE],
        "form-action": [CSP_SELF],
        "frame-ancestors": [CSP_NONE],
    },
}

REST_FRAMEWORK = {
    # The API is for the app and for tools: bearer tokens only. A browser's session cookie is
    # never accepted on /api/v1/, so no page of another site can act through it (no CSRF).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.AppAccessTokenAuthentication",
        "api.authentication.StaffTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # JSON only; deep nesting, NUL characters and oversized bodies are refused (api/parsers.py).
    "DEFAULT_PARSER_CLASSES": ["api.parsers.SafeJSONParser"],
    "DEFAULT_PAGINATION_CLASS": None,
    "EXCEPTION_HANDLER": "portal.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Activation Rescue API",
    "DESCRIPTION": (
        "The customer API for the lender's mobile app and the staff API for tools. Errors are "
        "always `{code, message, details}`; `docs/openapi.yaml` is this document, checked in."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # OpenAPI 3.1: the first version with webhooks.
    "OAS_VERSION": "3.1.0",
    # The core's callback is the core's API to us: a webhook in the document, not a path.
    "PREPROCESSING_HOOKS": ["api.schema.exclude_core_callback"],
    "WEBHOOKS": ["api.schema.core_event_webhook"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "api.schema.add_error_envelope",
    ],
    # One component per choice set that several serializers use.
    "ENUM_NAME_OVERRIDES": {
        "CaseStateEnum": "activation.models.CaseState",
        "FailureReasonEnum": "activation.models.FailureReason",
    },
}

# Access tokens for the mobile app: short-lived JWTs, refreshed with a rotating refresh token
# bound to one AppSession (api.models), which revoking ends at once.
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("API_ACCESS_TOKEN_MINUTES", default=5)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("API_REFRESH_TOKEN_DAYS", default=30)),
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env.str("API_SIGNING_KEY", default=SECRET_KEY),
    "AUTH_HEADER_TYPES": ("Bearer",),
    "USER_ID_CLAIM": "user_id",
    "UPDATE_LAST_LOGIN": False,
}

# A retried API request with the same Idempotency-Key gets the first answer again for this long
# (api/idempotency.py); the issue promises at least a day.
API_IDEMPOTENCY_KEY_HOURS = env.int("API_IDEMPOTENCY_KEY_HOURS", default=24)
if not 24 <= API_IDEMPOTENCY_KEY_HOURS <= 24 * 30:
    raise ImproperlyConfigured("API_IDEMPOTENCY_KEY_HOURS must be from 24 to 720.")
# No request of the API needs more (a passkey's answer is a few kilobytes).
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=64 * 1024)
# A key still "in progress" after this long belongs to a request whose process died (gunicorn
# kills a request after 30 s): a retry with it runs afresh instead of waiting for the expiry.
API_IDEMPOTENCY_ABANDONED_SECONDS = env.int("API_IDEMPOTENCY_ABANDONED_SECONDS", default=120)

# --- Celery -------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        # Broadcasts (worker control) too, instead of a control/ folder in the working directory.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
elif CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://")):
    # RabbitMQ, the production broker: durable quorum queues (replicated on a cluster, kept
    # across a broker restart), publisher confirms so a send that returned is on disk, and
    # RabbitMQ's own delayed delivery for countdowns (quorum queues have no global QoS, so a
    # worker must not hold delayed messages itself). A topic exchange is what that needs.
    CELERY_TASK_DEFAULT_QUEUE_TYPE = "quorum"
    CELERY_TASK_DEFAULT_EXCHANGE_TYPE = "topic"
    CELERY_BROKER_NATIVE_DELAYED_DELIVERY_QUEUE_TYPE = "quorum"
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
# A web request publishes after its transaction committed (portal.queue): with the broker down it
# gives up within about two seconds and the outbox sweep sends the work later.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0.2,
    "interval_step": 0.5,
    "interval_max": 1,
}
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=2.0)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True
# A task is acknowledged only after it ran, so a worker killed mid-task loses nothing.
CELERY_TASK_ACKS_LATE = True
# Every task has a time limit: a soft one (the task gets SoftTimeLimitExceeded and can stop
# cleanly) and a hard one (the child is killed and, with acks_late, the message redelivered).
# The few long jobs (the nightly chain verification, bulk recovery, the purge) set their own.
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=60)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=90)
if not 0 < CELERY_TASK_SOFT_TIME_LIMIT < CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        "CELERY_TASK_SOFT_TIME_LIMIT must be positive and below CELERY_TASK_TIME_LIMIT."
    )
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "sweep-core-outbox": {
        "task": "activation.tasks.sweep_core_outbox",
        "schedule": env.float("ACTIVATION_SWEEP_INTERVAL_SECONDS", default=10.0),
    },
    "verify-audit-chains": {
        "task": "activation.tasks.verify_audit_chains",
        "schedule": crontab(hour=3, minute=17),
    },
    "sweep-bulk-recovery-jobs": {
        "task": "activation.tasks.sweep_bulk_recovery_jobs",
        "schedule": 60.0,
    },
    "reconcile-activations": {
        "task": "activation.tasks.reconcile_activations",
        "schedule": env.float("ACTIVATION_RECONCILE_INTERVAL_SECONDS", default=60.0),
    },
    "purge-risk-evaluations": {
        "task": "risk.tasks.purge_evaluations",
        "schedule": crontab(hour=4, minute=11),
    },
    "purge-idempotency-keys": {
        "task": "api.tasks.purge_idempotency_keys",
        "schedule": crontab(minute=23),
    },
    # A worker stamps the time in the cache; /readyz and /metrics show how old the stamp is.
    # A stamp not run within its interval is dropped, so a backlog does not pile them up.
    "stamp-worker-heartbeat": {
        "task": "portal.tasks.stamp_worker_heartbeat",
        "schedule": 30.0,
        "options": {"expires": 30},
    },
}

# Exactly one beat across the fleet: with Redis at hand, beat keeps its schedule there and runs
# only while it holds RedBeat's lock; a second beat waits for the lock and takes over within
# CELERY_BEAT_LOCK_SECONDS of the first one's death (portal/beat.py). Every periodic task is
# also safe if two ever run at once. Without Redis (the embedded defaults) beat keeps its
# schedule in a local file, and one machine runs one beat.
_REDIS_CACHE = "redis" in CACHES["default"]["BACKEND"].lower()
CELERY_REDBEAT_REDIS_URL = env.str(
    "CELERY_REDBEAT_REDIS_URL", default=CACHES["default"]["LOCATION"] if _REDIS_CACHE else ""
)
if CELERY_REDBEAT_REDIS_URL:
    CELERY_BEAT_SCHEDULER = "portal.beat:LockedScheduler"
    CELERY_REDBEAT_KEY_PREFIX = env.str(
        "CELERY_REDBEAT_KEY_PREFIX", default="activation-rescue:beat:"
    )
    CELERY_REDBEAT_LOCK_TIMEOUT = env.int("CELERY_BEAT_LOCK_SECONDS", default=30)
    # Beat wakes often enough to renew the lock well before it expires: portal/beat.py.
    # A Redis restart is waited out (retrying for this long) instead of ending beat.
    CELERY_REDBEAT_REDIS_OPTIONS = {"retry_period": 60}

# Rate limits and the circuit breaker need a cache shared by every process with atomic increments:
# Redis in production (Django's own RedisCache has them, though django-ratelimit only knows
# django-redis by name). The development file cache is neither, which one developer can live with.
SILENCED_SYSTEM_CHECKS = ["django_ratelimit.W001"]
if not PRODUCTION:
    SILENCED_SYSTEM_CHECKS.append("django_ratelimit.E003")

# --- Core credit system -------------------------------------------------------------------
CORE_API_URL = env.str("CORE_API_URL", default="http://127.0.0.1:8001")
CORE_API_TOKEN = env.str("CORE_API_TOKEN", default=_DEVELOPMENT_CORE_TOKEN)
CORE_WEBHOOK_SECRET = env.str("CORE_WEBHOOK_SECRET", default=_DEVELOPMENT_WEBHOOK_SECRET)
CORE_CONNECT_TIMEOUT_SECONDS = env.float("CORE_CONNECT_TIMEOUT_SECONDS", default=2.0)
CORE_READ_TIMEOUT_SECONDS = env.float("CORE_READ_TIMEOUT_SECONDS", default=5.0)
# Circuit breaker: after this many consecutive failures, stop calling the core for a while.
CORE_BREAKER_FAILURE_THRESHOLD = env.int("CORE_BREAKER_FAILURE_THRESHOLD", default=5)
CORE_BREAKER_RESET_SECONDS = env.float("CORE_BREAKER_RESET_SECONDS", default=30.0)

# --- Activation ---------------------------------------------------------------------------
ACTIVATION_SLA_MINUTES = env.int("ACTIVATION_SLA_MINUTES", default=15)
ACTIVATION_MAX_SUBMIT_ATTEMPTS = env.int("ACTIVATION_MAX_SUBMIT_ATTEMPTS", default=8)
ACTIVATION_RETRY_BASE_SECONDS = env.float("ACTIVATION_RETRY_BASE_SECONDS", default=2.0)
ACTIVATION_RETRY_MAX_SECONDS = env.float("ACTIVATION_RETRY_MAX_SECONDS", default=300.0)
# A delivery that has not reported back within this long is presumed dead and is retried.
ACTIVATION_DELIVERY_LEASE_SECONDS = env.int("ACTIVATION_DELIVERY_LEASE_SECONDS", default=60)
ACTIVATION_CONFIRMATION_POLL_AFTER_SECONDS = env.int(
    "ACTIVATION_CONFIRMATION_POLL_AFTER_SECONDS", default=60
)
# A case handed to staff after its request may have reached the core is asked about this often.
ACTIVATION_REVIEW_POLL_INTERVAL_SECONDS = env.int(
    "ACTIVATION_REVIEW_POLL_INTERVAL_SECONDS", default=300
)
# One reconciliation run asks about at most this many cases, stops after this many unanswered
# reads in a row, and starts no read after its budget: an outage costs a run seconds, not a
# timeout per waiting case.
ACTIVATION_RECONCILE_MAX_POLLS_PER_RUN = env.int(
    "ACTIVATION_RECONCILE_MAX_POLLS_PER_RUN", default=200
)
ACTIVATION_RECONCILE_MAX_CONSECUTIVE_UNREACHABLE = env.int(
    "ACTIVATION_RECONCILE_MAX_CONSECUTIVE_UNREACHABLE", default=3
)
ACTIVATION_RECONCILE_BUDGET_SECONDS = env.float("ACTIVATION_RECONCILE_BUDGET_SECONDS", default=20.0)
ACTIVATION_PROGRESS_REFRESH_SECONDS = env.int("ACTIVATION_PROGRESS_REFRESH_SECONDS", default=3)
# After a pause, queued submissions go out at most this fast, so the core is not flooded.
ACTIVATION_DRAIN_RATE_PER_MINUTE = env.int("ACTIVATION_DRAIN_RATE_PER_MINUTE", default=600)
# A bulk recovery resubmits this many cases per transaction, updating its progress after each.
ACTIVATION_BULK_RECOVERY_BATCH_SIZE = env.int("ACTIVATION_BULK_RECOVERY_BATCH_SIZE", default=100)
# Retry requests per customer and per address; beyond them a friendly 429 page says when to retry.
ACTIVATION_RETRY_RATE_PER_CUSTOMER = _rate("ACTIVATION_RETRY_RATE_PER_CUSTOMER", "20/m")
ACTIVATION_RETRY_RATE_PER_IP = _rate("ACTIVATION_RETRY_RATE_PER_IP", "120/m")

# --- Verification -------------------------------------------------------------------------
VERIFICATION_CODE_TTL_SECONDS = env.int("VERIFICATION_CODE_TTL_SECONDS", default=300)
VERIFICATION_RESEND_COOLDOWN_SECONDS = env.int("VERIFICATION_RESEND_COOLDOWN_SECONDS", default=60)
VERIFICATION_THROTTLE_FACTOR = env.int("VERIFICATION_THROTTLE_FACTOR", default=1)
VERIFICATION_MAX_ATTEMPTS_PER_CODE = env.int("VERIFICATION_MAX_ATTEMPTS_PER_CODE", default=5)
VERIFICATION_MAX_CODES_PER_HOUR_PER_CUSTOMER = env.int(
    "VERIFICATION_MAX_CODES_PER_HOUR_PER_CUSTOMER", default=10
)
VERIFICATION_MAX_CODES_PER_HOUR_PER_DESTINATION = env.int(
    "VERIFICATION_MAX_CODES_PER_HOUR_PER_DESTINATION", default=10
)
# Burned codes on one case after which staff take over instead of yet another code.
VERIFICATION_LOCKOUTS_BEFORE_REVIEW = env.int("VERIFICATION_LOCKOUTS_BEFORE_REVIEW", default=3)

SMS_BACKEND = env.str("SMS_BACKEND", default="verification.sms.FileBackend")
SMS_FILE_PATH = env.str("SMS_FILE_PATH", default=str(VAR_DIR / "sms.jsonl"))
SMS_GATEWAY_URL = env.str("SMS_GATEWAY_URL", default="")
SMS_GATEWAY_TOKEN = env.str("SMS_GATEWAY_TOKEN", default="")
SMS_GATEWAY_CONNECT_TIMEOUT_SECONDS = env.float("SMS_GATEWAY_CONNECT_TIMEOUT_SECONDS", default=2.0)
SMS_GATEWAY_READ_TIMEOUT_SECONDS = env.float("SMS_GATEWAY_READ_TIMEOUT_SECONDS", default=5.0)
SMS_GATEWAY_RETRIES = env.int("SMS_GATEWAY_RETRIES", default=2)
# After this many consecutive sends the gateway failed, codes by SMS fail at once for a while.
SMS_GATEWAY_BREAKER_FAILURE_THRESHOLD = env.int("SMS_GATEWAY_BREAKER_FAILURE_THRESHOLD", default=5)
SMS_GATEWAY_BREAKER_RESET_SECONDS = env.float("SMS_GATEWAY_BREAKER_RESET_SECONDS", default=30.0)

vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Activation Rescue <no-reply@localhost>")

PHONENUMBER_DEFAULT_REGION = "CN"
PHONENUMBER_DB_FORMAT = "E164"

OTP_TOTP_ISSUER = "Activation Rescue"

# --- Passkeys (WebAuthn, through django-otp-webauthn; see verification/passkeys.py) ----------
# The relying party: the registrable domain passkeys are bound to (changing it later strands
# every passkey), and the exact origins pages are served from. Browsers allow passkeys on https,
# and on http only for localhost; production requires both settings and https origins.
OTP_WEBAUTHN_RP_ID = env.str("WEBAUTHN_RP_ID", default="localhost")
OTP_WEBAUTHN_RP_NAME = "Activation Rescue"
OTP_WEBAUTHN_ALLOWED_ORIGINS = env.list("WEBAUTHN_ORIGINS", default=["http://localhost:8000"])
OTP_WEBAUTHN_HELPER_CLASS = "verification.passkeys.PortalWebAuthnHelper"
# A passkey is a second factor here (after the password), never a way in on its own.
OTP_WEBAUTHN_ALLOW_PASSWORDLESS_LOGIN = False
# How long a passkey request (its challenge) may be answered.
OTP_WEBAUTHN_TIMEOUT_SECONDS = env.int("WEBAUTHN_TIMEOUT_SECONDS", default=180)
if not 30 <= OTP_WEBAUTHN_TIMEOUT_SECONDS <= 600:
    raise ImproperlyConfigured("WEBAUTHN_TIMEOUT_SECONDS must be from 30 to 600.")


def _passkey_problems(rp_id: str, origins: list[str]) -> list[str]:
    from urllib.parse import urlsplit

    problems = []
    for origin in origins:
        parts = urlsplit(origin)
        host = parts.hostname or ""
        if parts.scheme != "https" and host != "localhost":
            problems.append(f"passkey origin {origin!r} must use https")
        if host != rp_id and not host.endswith("." + rp_id):
            problems.append(f"passkey origin {origin!r} is not on {rp_id!r} or a subdomain of it")
    return problems


if _problems := _passkey_problems(OTP_WEBAUTHN_RP_ID, OTP_WEBAUTHN_ALLOWED_ORIGINS):
    raise ImproperlyConfigured("; ".join(_problems) + ".")
if PRODUCTION and any(not o.startswith("https://") for o in OTP_WEBAUTHN_ALLOWED_ORIGINS):
    raise ImproperlyConfigured("Refusing to start in production: passkey origins must use https.")
# No one, superusers included, reads another person's authenticator secret or QR code.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# --- Back-office sessions -----------------------------------------------------------------
# A staff session ends after this long without a request, and this long after it began at most.
BACKOFFICE_SESSION_IDLE_MINUTES = env.int("BACKOFFICE_SESSION_IDLE_MINUTES", default=30)
BACKOFFICE_SESSION_MAX_HOURS = env.float("BACKOFFICE_SESSION_MAX_HOURS", default=10.0)
if BACKOFFICE_SESSION_IDLE_MINUTES <= 0 or BACKOFFICE_SESSION_MAX_HOURS <= 0:
    raise ImproperlyConfigured(
        "BACKOFFICE_SESSION_IDLE_MINUTES and BACKOFFICE_SESSION_MAX_HOURS must be positive."
    )
# After a four-eyes reset of a lost authenticator, the staff member has this long to set up a new
# one at their next back-office sign-in; after it, the reset must be asked for again.
BACKOFFICE_AUTHENTICATOR_ENROLMENT_HOURS = env.float(
    "BACKOFFICE_AUTHENTICATOR_ENROLMENT_HOURS", default=24.0
)
if not 0 < BACKOFFICE_AUTHENTICATOR_ENROLMENT_HOURS <= 24 * 7:
    raise ImproperlyConfigured("BACKOFFICE_AUTHENTICATOR_ENROLMENT_HOURS must be from 0 to 168.")
# Someone made a supervisor this recently may neither ask for nor approve an authenticator reset:
# whoever can grant the role (a superuser) must not be able to drive a reset the same day.
BACKOFFICE_RESET_ROLE_AGE_HOURS = env.float("BACKOFFICE_RESET_ROLE_AGE_HOURS", default=24.0)
if not 0 <= BACKOFFICE_RESET_ROLE_AGE_HOURS <= 24 * 90:
    raise ImproperlyConfigured("BACKOFFICE_RESET_ROLE_AGE_HOURS must be from 0 to 2160.")

# --- Logs (portal/logs.py) ------------------------------------------------------------------
# One line per event on stdout, carrying the request id, user, case and Celery task: JSON in
# production, readable in development. Phone numbers and secrets are masked in every line.
LOG_FORMAT = env.str("LOG_FORMAT", default="json" if PRODUCTION else "console")
if LOG_FORMAT not in {"json", "console"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'json' or 'console', not {LOG_FORMAT!r}.")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(
        f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}."
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "portal.logs.ContextFilter"}},
    "formatters": {
        "json": {"()": "portal.logs.JsonFormatter"},
        "console": {"()": "portal.logs.ConsoleFormatter"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own handlers (stderr while DEBUG, runserver's request lines, e-mail to
        # ADMINS) are replaced: its records go to the one handler above like everyone's.
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.server": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "httpx": {"level": "WARNING"},
    },
}

# --- Metrics and the worker heartbeat (portal/metrics.py, portal/heartbeat.py) -------------
# The bearer token Prometheus sends to /metrics. It only reads counts, never a case or a person;
# unset, /metrics answers 403 (metrics off).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
if METRICS_TOKEN and not re.fullmatch(r"[\x21-\x7e]{32,}", METRICS_TOKEN):
    raise ImproperlyConfigured(
        "METRICS_TOKEN must be at least 32 printable ASCII characters without spaces "
        "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')."
    )
# A worker heartbeat older than this is reported stale by /readyz (which stays ready: see
# portal/health.py); the gauge activation_rescue_worker_heartbeat_age_seconds carries the age.
WORKER_HEARTBEAT_STALE_SECONDS = env.int("WORKER_HEARTBEAT_STALE_SECONDS", default=120)
if WORKER_HEARTBEAT_STALE_SECONDS < 60:
    raise ImproperlyConfigured(
        "WORKER_HEARTBEAT_STALE_SECONDS must be at least 60 (the heartbeat is stamped every 30 s)."
    )

# --- The risk checkpoint (risk/) -----------------------------------------------------------
# How alike a device's attributes must be to a known device's to recognise it without its
# cookie (0 to 1; see risk/fingerprint.py).
RISK_FINGERPRINT_MATCH = env.float("RISK_FINGERPRINT_MATCH", default=0.85)
if not 0.5 <= RISK_FINGERPRINT_MATCH <= 1:
    raise ImproperlyConfigured("RISK_FINGERPRINT_MATCH must be between 0.5 and 1.")
# A text file of CIDR ranges, one per line with an optional label (vpn, proxy or hosting);
# staff add more in the back office.
RISK_NETWORK_LIST_FILE = env.str("RISK_NETWORK_LIST_FILE", default="")
# MaxMind-format databases (GeoLite2-Country, GeoLite2-ASN or compatible); optional.
RISK_GEOIP_COUNTRY_DB = env.str("RISK_GEOIP_COUNTRY_DB", default="")
RISK_GEOIP_ASN_DB = env.str("RISK_GEOIP_ASN_DB", default="")
# A step-up is answered only by a stronger factor the customer already had: set up at least this
# long ago, and before the phone number, e-mail or password last changed (see risk/services).
RISK_STRONG_FACTOR_MIN_AGE_HOURS = env.int("RISK_STRONG_FACTOR_MIN_AGE_HOURS", default=72)
# Evaluations older than this are deleted nightly (their record stays on the case timeline).
# At least a year: no rule looks further back than that.
RISK_EVALUATION_RETENTION_DAYS = env.int("RISK_EVALUATION_RETENTION_DAYS", default=400)
if RISK_EVALUATION_RETENTION_DAYS < 366:
    raise ImproperlyConfigured("RISK_EVALUATION_RETENTION_DAYS must be at least 366.")
