"""gunicorn's settings for a production web node.

Run as ``gunicorn -c deploy/gunicorn.conf.py portal.wsgi``. The numbers are the ones
``make bench`` measured (docs/benchmarks.md, the surge run): four processes of eight threads
on a 2-core node. The threads overlap the many short database and Redis round trips of a
request; two threads instead of eight halved the burst throughput. Scale workers with cores
(``WEB_CONCURRENCY``), not threads.
"""

import os

from prometheus_client import multiprocess

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
backlog = 2048
# Longer than HAProxy keeps an idle connection to a node (pool-purge-delay, 5 s), so HAProxy
# closes idle connections first.
keepalive = 75
# A request that takes this long is stuck (the core client's own timeouts are a few seconds).
timeout = 30
graceful_timeout = 30
# Recycle workers now and then, staggered, so slow leaks never add up.
max_requests = 10_000
max_requests_jitter = 1_000
accesslog = "-"
# The client as the balancer saw it and the request id the logs carry, beside the balancer's own
# address (%(h)s).
access_log_format = (
    '%({x-forwarded-for}i)s %(h)s %(t)s "%(r)s" %(s)s %(b)s %(L)s "%(a)s" %({x-request-id}i)s'
)
errorlog = "-"
# The portal trusts X-Forwarded-For only as far as TRUSTED_PROXY_COUNT says; gunicorn itself
# must not rewrite the address from headers.
forwarded_allow_ips = ""


def child_exit(server, worker):
    """A worker's Prometheus files stop counting as live once it exits (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
