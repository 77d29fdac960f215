"""Settings for the test suite: the real services when they answer, quick stand-ins otherwise.

``TEST_DATABASE_URL`` and ``TEST_REDIS_URL`` name PostgreSQL and Redis (CI sets both). Without
them the suite looks for them on their usual local ports, and falls back to SQLite and an
in-memory broker; tests that need the real thing then skip, unless ``TEST_STRICT=1`` (CI) makes
them fail.
"""

import os
import socket

import environ

from portal.settings import *  # noqa: F403
from portal.settings import VAR_DIR

_env = environ.Env()


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


_database_url = _env.str("TEST_DATABASE_URL", default="")
if not _database_url and _answers("127.0.0.1", 5432):
    _database_url = "postgres://postgres@127.0.0.1:5432/activation_rescue"
DATABASES = {"default": _env.db_url_config(_database_url or "sqlite://:memory:")}
# Threads (live server, concurrency tests) must not keep connections that block teardown.
DATABASES["default"]["CONN_MAX_AGE"] = 0

_redis_url = _env.str("TEST_REDIS_URL", default="")
if not _redis_url and _answers("127.0.0.1", 6379):
    _redis_url = "redis://127.0.0.1:6379/0"
if _redis_url:
    # Each xdist worker gets its own Redis database, so parallel tests never share a queue.
    # TEST_REDIS_DB_OFFSET moves a whole run to other databases, so two runs can share a Redis.
    _worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or "0"
    _offset = _env.int("TEST_REDIS_DB_OFFSET", default=1)
    _redis_url = _redis_url.rsplit("/", 1)[0] + f"/{(int(_worker) + _offset - 1) % 15 + 1}"
TEST_REDIS_URL = _redis_url
CACHES = {
    "default": {"BACKEND": "portal.cache.RedisCache", "LOCATION": _redis_url}
    if _redis_url
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
CELERY_BROKER_URL = _redis_url or "memory://"
CELERY_BROKER_TRANSPORT_OPTIONS = {}
CELERY_TASK_ALWAYS_EAGER = True

TEST_STRICT = _env.bool("TEST_STRICT", default=False)

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SMS_BACKEND = "verification.sms.LocmemBackend"
SMS_FILE_PATH = str(VAR_DIR / "test-sms.jsonl")
CORE_API_URL = "http://127.0.0.1:9"  # nothing listens: a test that needs the core starts one
CORE_READ_TIMEOUT_SECONDS = 1.0
CORE_CONNECT_TIMEOUT_SECONDS = 1.0
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
