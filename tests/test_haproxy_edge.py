"""The edge as customers meet it: the real HAProxy with deploy/haproxy.cfg in front of two stand-in
web nodes that echo back what reached them.

Each test sends what a hostile or broken client would send and asserts both what the client got
and what a web node received (or that it received nothing). Every request carries an ``X-Probe``
header of its own, so the health checks and the other tests' requests never blur a count.
"""

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from bench.fleet import make_certificate

from .fixtures import ROOT, free_port, require, wait_until

PORTAL_HOST = "localhost"
CONNECTIONS_PER_CLIENT = 8
BODY_LIMIT = 65536
# The log's %ac/%fc/%bc/%sc/%rc then %sq/%bq: the last of the five is the retry count.
RETRIES = re.compile(r" \d+/\d+/\d+/\d+/(\+?\d+) \d+/\d+ ")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        # HAProxy's health check hangs up once it has read the status line, sometimes before
        # the body is written; that reset is expected and not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class EchoNode:
    """A web node that answers /readyz for the health check and echoes every other request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self._lock = threading.Lock()
        self._requests: list[dict] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        node = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, so a stopped node has no open connection
            # left to answer on, as a dead one would not.
            protocol_version = "HTTP/1.0"

            def do_request(self) -> None:
                # Recorded as soon as the head arrives, before the body is read: a request
                # HAProxy passed on while its body was still coming shows up here at once.
                seen = {
                    "method": self.command,
                    # The target as it came on the wire: http.server folds a leading "//".
                    "path": self.requestline.split(" ")[1],
                    "headers": [[name, value] for name, value in self.headers.items()],
                    "body_length": None,
                }
                with node._lock:
                    node._requests.append(seen)
                length = int(self.headers.get("Content-Length") or 0)
                seen["body_length"] = len(self.rfile.read(length)) if length else 0
                if self.command == "GET" and self.path == "/readyz":
                    body, content_type = b"ready", "text/plain"
                else:
                    body, content_type = json.dumps(seen).encode(), "application/json"
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_HEAD = do_request

            def log_message(self, format, *args) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", self.port), Handler)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        """Stop listening: connections to the node are refused from now on."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def requests_with(self, probe: str) -> list[dict]:
        with self._lock:
            # HAProxy sends header names in lower case (HTTP/2 style); HTTP/1.1 ignores case.
            return [
                request
                for request in self._requests
                if any(
                    name.lower() == "x-probe" and value == probe
                    for name, value in request["headers"]
                )
            ]


@dataclass
class Edge:
    port: int
    ca_file: Path
    stats_socket: Path
    log_path: Path
    nodes: tuple[EchoNode, EchoNode]
    popen: subprocess.Popen

    def url(self, path: str) -> str:
        return f"https://{PORTAL_HOST}:{self.port}{path}"

    def client(self) -> httpx.Client:
        return httpx.Client(verify=self.ssl_context(), timeout=10)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def seen(self, probe: str) -> list[dict]:
        """What the web nodes received carrying this probe, both nodes together."""
        return [request for node in self.nodes for request in node.requests_with(probe)]

    def admin(self, command: str) -> str:
        """Ask HAProxy's admin socket (the one HAPROXY_STATS_SOCKET names)."""
        with socket.socket(socket.AF_UNIX) as admin:
            admin.connect(str(self.stats_socket))
            admin.sendall(command.encode() + b"\n")
            return b"".join(iter(lambda: admin.recv(65536), b"")).decode()

    def servers_up(self) -> int:
        """How many web nodes are UP with a passed health check (a server starts UP unchecked)."""
        return sum(
            1
            for line in self.admin("show stat").splitlines()
            if line.startswith("web,web") and ",UP," in line and ",L7OK," in line
        )

    def client_connections(self) -> int:
        """Open connections HAProxy counts against 127.0.0.1 in the frontend's stick table."""
        found = re.search(r"conn_cur=(\d+)", self.admin("show table portal"))
        return int(found.group(1)) if found else 0

    def log_line(self, request_id: str) -> str:
        """HAProxy's log line of the request it gave this X-Request-ID (the log ends with it)."""

        def line() -> str | None:
            return next((x for x in self.log().splitlines() if x.endswith(request_id)), None)

        return wait_until(line, timeout=3, what=f"the log line of {request_id}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    require(shutil.which("haproxy") is not None, "Debian's haproxy")
    require(shutil.which("openssl") is not None, "Debian's openssl")
    workdir = tmp_path_factory.mktemp("haproxy")
    haproxy_pem, ca_file = make_certificate(workdir)
    nodes = (EchoNode("web1"), EchoNode("web2"))
    for node in nodes:
        node.start()
    port = free_port()
    stats_socket = workdir / "haproxy.sock"
    log_path = workdir / "haproxy.log"
    env = {
        **os.environ,
        "HAPROXY_BIND": f"127.0.0.1:{port}",
        "HAPROXY_CERT": str(haproxy_pem),
        "HAPROXY_STATS_SOCKET": str(stats_socket),
        "HAPROXY_CONNECTIONS_PER_CLIENT": str(CONNECTIONS_PER_CLIENT),
        "PORTAL_HOST": PORTAL_HOST,
        "WEB_NODE_1": f"127.0.0.1:{nodes[0].port}",
        "WEB_NODE_2": f"127.0.0.1:{nodes[1].port}",
    }
    with log_path.open("w") as log:
        popen = subprocess.Popen(
            ["haproxy", "-db", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    edge = Edge(port, ca_file, stats_socket, log_path, nodes, popen)
    try:

        def both_up() -> bool:
            assert popen.poll() is None, f"haproxy exited:\n{edge.log()}"
            try:
                return edge.servers_up() == 2
            except OSError:  # the admin socket is not there yet
                return False

        wait_until(both_up, timeout=10, interval=0.1, what="both web nodes UP in HAProxy")
        yield edge
    finally:
        if popen.poll() is None:
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait()
        for node in nodes:
            node.stop()


def probe() -> str:
    return uuid.uuid4().hex


def header_values(seen: dict, name: str) -> list[str]:
    return [value for key, value in seen["headers"] if key.lower() == name.lower()]


def tls_version(edge: Edge, context: ssl.SSLContext) -> str:
    """Complete a TLS handshake with HAProxy and name the version agreed."""
    return tls_handshake(edge, context)[0]


def tls_handshake(edge: Edge, context: ssl.SSLContext) -> tuple[str, bool]:
    """Complete a TLS handshake with HAProxy: the version agreed, and whether a ticket came."""
    with (
        socket.create_connection(("127.0.0.1", edge.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=PORTAL_HOST) as tls,
    ):
        return tls.version(), tls.session.has_ticket


# --- What the web node is told about the client ------------------------------------------------


@pytest.mark.parametrize(
    "forwarded_for",
    [[], ["9.9.9.9"], ['9.9.9.9, "'], ["9.9.9.9", "8.8.8.8"]],
    ids=["none", "one-address", "garbage", "two-header-lines"],
)
def test_the_node_hears_only_the_proxy_about_the_client(edge, forwarded_for):
    tag = probe()
    headers = [("X-Forwarded-For", value) for value in forwarded_for] + [
        ("X-Probe", tag),
        ("Forwarded", "for=9.9.9.9;proto=http"),
        ("X-Real-IP", "9.9.9.9"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Proto", "http"),
        ("X-Request-ID", "chosen-by-the-client"),
    ]
    with edge.client() as client:
        response = client.get(edge.url("/echo"), headers=headers)

    assert response.status_code == 200
    [seen] = edge.seen(tag)
    assert response.json() == seen
    assert header_values(seen, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(seen, "X-Forwarded-Proto") == ["https"]
    for dropped in ("Forwarded", "X-Real-IP", "X-Forwarded-Host"):
        assert header_values(seen, dropped) == [], dropped
    [request_id] = header_values(seen, "X-Request-ID")
    assert request_id != "chosen-by-the-client"
    assert UUID.match(request_id), request_id


def test_every_request_gets_a_request_id_of_its_own(edge):
    tags = [probe(), probe()]
    with edge.client() as client:
        for tag in tags:
            client.get(edge.url("/"), headers={"X-Probe": tag, "X-Request-ID": "same"})
    ids = [header_values(seen, "X-Request-ID") for tag in tags for seen in edge.seen(tag)]
    assert len(ids) == 2
    assert ids[0] != ids[1]
    assert all(len(values) == 1 and UUID.match(values[0]) for values in ids), ids


# --- What never reaches a node -----------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/readyz",
        "/metrics",
        "/%72eadyz",
        "//metrics/",
        "/READYZ",
        "/readyz?full=1",
        "/%2Freadyz",
        "/metrics%2F",
    ],
)
def test_readiness_and_metrics_do_not_exist_from_outside(edge, path):
    tag = probe()
    with edge.client() as client:
        response = client.get(edge.url(path), headers={"X-Probe": tag})

    assert response.status_code == 404
    assert edge.seen(tag) == []
    # The path went out as written (HAProxy's log has the request line), not tidied by httpx.
    wait_until(lambda: f'"GET {path} HTTP/1.1"' in edge.log(), timeout=3, what="the log line")


@pytest.mark.parametrize("path", ["/healthz", "/", "/%68ealthz", "//healthz/", "/readyz-help"])
def test_other_paths_reach_a_node_as_written(edge, path):
    tag = probe()
    with edge.client() as client:
        response = client.get(edge.url(path), headers={"X-Probe": tag})

    assert response.status_code == 200
    [seen] = edge.seen(tag)
    assert seen["path"] == path


@pytest.mark.parametrize("host", ["evil.example", "evil.example:443", "localhost.evil.example"])
def test_a_host_other_than_the_portal_is_answered_421_at_the_proxy(edge, host):
    tag = probe()
    with edge.client() as client:
        response = client.get(edge.url("/"), headers={"Host": host, "X-Probe": tag})

    assert response.status_code == 421
    assert response.text == "Unknown host."
    assert edge.seen(tag) == []


@pytest.mark.parametrize("host", ["localhost:{port}", "localhost", "LOCALHOST:{port}"])
def test_the_portal_host_passes_with_or_without_a_port(edge, host):
    tag = probe()
    host = host.format(port=edge.port)
    with edge.client() as client:
        response = client.get(edge.url("/"), headers={"Host": host, "X-Probe": tag})

    assert response.status_code == 200
    [seen] = edge.seen(tag)
    assert header_values(seen, "Host") == [host]


# --- Request bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize("length", [BODY_LIMIT + 1, 1_000_000])
def test_a_body_above_64_kib_is_refused_413(edge, length):
    tag = probe()
    with edge.client() as client:
        response = client.post(edge.url("/api/x"), content=b"x" * length, headers={"X-Probe": tag})

    assert response.status_code == 413
    assert edge.seen(tag) == []


def test_a_body_of_unknown_length_is_refused_411(edge):
    tag = probe()
    with edge.client() as client:
        response = client.post(
            edge.url("/api/x"), content=iter([b"a" * 10, b"b" * 10]), headers={"X-Probe": tag}
        )

    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 411
    assert response.text == "Send a Content-Length."
    assert edge.seen(tag) == []


@pytest.mark.parametrize("length", [60 * 1024, BODY_LIMIT])
def test_a_body_within_the_limit_reaches_the_node_whole(edge, length):
    tag = probe()
    with edge.client() as client:
        response = client.post(edge.url("/api/x"), content=b"x" * length, headers={"X-Probe": tag})

    assert response.status_code == 200
    [seen] = edge.seen(tag)
    assert seen["body_length"] == length
    assert header_values(seen, "Content-Length") == [str(length)]


@contextlib.contextmanager
def raw_tls(edge: Edge, *, timeout: float) -> Iterator[ssl.SSLSocket]:
    """A TLS connection to the proxy, written to byte by byte by the test."""
    with (
        socket.create_connection(("127.0.0.1", edge.port), timeout=timeout) as raw,
        edge.ssl_context().wrap_socket(raw, server_hostname=PORTAL_HOST) as tls,
    ):
        yield tls


def post_head(edge: Edge, tag: str, length: int) -> bytes:
    return (
        f"POST /api/body HTTP/1.1\r\nHost: {PORTAL_HOST}:{edge.port}\r\nX-Probe: {tag}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("length", [1000, BODY_LIMIT])
def test_a_slow_body_waits_at_the_proxy_not_at_a_node(edge, length):
    tag = probe()
    with raw_tls(edge, timeout=10) as tls:
        tls.sendall(post_head(edge, tag, length) + b"x" * (length - 100))
        time.sleep(1.0)
        # Nothing of the request at either node while 100 bytes of its body are missing.
        assert edge.seen(tag) == []

        tls.sendall(b"x" * 100)
        response = http.client.HTTPResponse(tls)
        response.begin()
        body = response.read()

    assert response.status == 200
    [seen] = edge.seen(tag)
    assert json.loads(body)["body_length"] == seen["body_length"] == length


def test_a_body_declared_too_large_is_refused_before_it_is_sent(edge):
    # The size is checked on the headers: the proxy does not wait for a body it would refuse.
    with raw_tls(edge, timeout=5) as tls:
        tls.sendall(post_head(edge, probe(), 1_000_000))
        began = time.monotonic()
        response = http.client.HTTPResponse(tls)
        response.begin()
    assert response.status == 413
    assert time.monotonic() - began < 3


# --- What every answer says --------------------------------------------------------------------


def test_a_node_does_name_its_server_so_the_proxy_has_something_to_remove(edge):
    response = httpx.get(f"http://127.0.0.1:{edge.nodes[0].port}/echo")
    assert response.headers["Server"].startswith("BaseHTTP")


@pytest.mark.parametrize(
    ("method", "path", "headers", "content", "status"),
    [
        ("GET", "/echo", {}, None, 200),
        ("GET", "/readyz", {}, None, 404),
        ("GET", "/", {"Host": "evil.example"}, None, 421),
        ("POST", "/", {}, b"x" * (BODY_LIMIT + 1), 413),
        ("POST", "/", {}, iter([b"x"]), 411),
    ],
    ids=["node", "denied", "unknown-host", "too-large", "chunked"],
)
def test_every_answer_has_hsts_and_no_server_header(edge, method, path, headers, content, status):
    with edge.client() as client:
        response = client.request(method, edge.url(path), headers=headers, content=content)

    assert response.status_code == status
    assert "Server" not in response.headers
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


# --- TLS ---------------------------------------------------------------------------------------


def test_tls_below_1_2_and_non_aead_suites_are_refused(edge):
    assert tls_version(edge, edge.ssl_context()) == "TLSv1.3"
    tls_1_2 = edge.ssl_context()
    tls_1_2.maximum_version = ssl.TLSVersion.TLSv1_2
    # no-tls-tickets: a TLS 1.2 session is not resumable from a ticket HAProxy hands out.
    assert tls_handshake(edge, tls_1_2) == ("TLSv1.2", False)

    tls_1_1 = edge.ssl_context()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tls_1_1.set_ciphers("DEFAULT:@SECLEVEL=0")
        tls_1_1.minimum_version = ssl.TLSVersion.TLSv1_1
        tls_1_1.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError) as refused:
        tls_version(edge, tls_1_1)
    if refused.value.reason != "NO_PROTOCOLS_AVAILABLE":
        # The client offered TLS 1.1 and HAProxy answered with a protocol-version alert.
        assert refused.value.reason == "TLSV1_ALERT_PROTOCOL_VERSION", refused.value
    # Where this OpenSSL would not even offer TLS 1.1, this stands in for it: a TLS 1.2 suite
    # that is not AEAD (CBC with SHA-1) is refused, while TLS 1.2 with default suites works.
    cbc = edge.ssl_context()
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA")
    with pytest.raises(ssl.SSLError) as refused:
        tls_version(edge, cbc)
    assert refused.value.reason == "SSLV3_ALERT_HANDSHAKE_FAILURE", refused.value


# --- Limits and failover -----------------------------------------------------------------------


def test_one_client_address_holds_at_most_its_share_of_connections(edge):
    # Earlier tests' connections are gone from the count before this one starts counting.
    wait_until(lambda: edge.client_connections() == 0, timeout=3, what="no open connection")
    held = []
    try:
        for _ in range(CONNECTIONS_PER_CLIENT):
            raw = socket.create_connection(("127.0.0.1", edge.port), timeout=5)
            held.append(edge.ssl_context().wrap_socket(raw, server_hostname=PORTAL_HOST))
        assert edge.client_connections() == CONNECTIONS_PER_CLIENT
        # One more is closed before TLS begins.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            tls_version(edge, edge.ssl_context())
    finally:
        for connection in held:
            connection.close()

    # Once the client lets go, it may connect again.
    wait_until(lambda: edge.client_connections() == 0, timeout=3, what="the connections closed")
    assert tls_version(edge, edge.ssl_context()) == "TLSv1.3"


def test_requests_keep_succeeding_when_a_node_dies(edge):
    dying, surviving = edge.nodes
    tags = [probe() for _ in range(30)]
    dying.stop()
    try:
        started = time.monotonic()
        with edge.client() as client:
            statuses = [
                client.get(edge.url("/echo"), headers={"X-Probe": tag}).status_code for tag in tags
            ]
        elapsed = time.monotonic() - started

        assert statuses == [200] * len(tags)
        assert all(len(surviving.requests_with(tag)) == 1 for tag in tags)
        assert all(dying.requests_with(tag) == [] for tag in tags)
        assert elapsed < 10, elapsed
        # HAProxy had not yet seen the node fail its checks: requests were still sent to it, were
        # refused, and went to the other node. The log's retry count says so ("+1": redispatched).
        request_ids = [
            header_values(seen, "X-Request-ID")[0] for tag in tags for seen in edge.seen(tag)
        ]
        retries = [RETRIES.search(edge.log_line(request_id)).group(1) for request_id in request_ids]
        assert "+1" in retries, retries
    finally:
        dying.start()
        wait_until(lambda: edge.servers_up() == 2, timeout=10, what="the node back UP")
