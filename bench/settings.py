"""The portal's settings plus the bare baseline view the surge benchmark compares against."""

from portal.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
# The benchmark speaks plain HTTP on loopback, where a TLS-terminating proxy would stand in
# production; cookies marked Secure would never come back to it.
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
# The floor activation's tasks (``bench/tasks.py``), for the workers the benchmark starts.
CELERY_IMPORTS = ["bench.tasks"]
