"""Outgoing HTTP: what every client of ours shares."""

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The trusted certificates, loaded once per process.

    httpx loads them afresh for every ``httpx.Client`` it builds, some 20 ms of CPU: more than a
    whole delivery to the core costs otherwise, paid again for every delivery and every SMS.
    """
    return httpx.create_ssl_context()
