"""What an app request tells the timeline and the risk checkpoint about the client.

The app sends a stable installation id (``X-Installation-Id``) and its platform facts in
headers. Once signed in, the installation is the one the AppSession was issued to (its token
proves it), whatever the header says; the facts feed the same device and risk signals as a
browser's cookie and script (``risk.facts.ClientFacts``).
"""

import hashlib
import re

from django.http import HttpRequest
from django.utils import timezone

from activation.timeline import RequestContext
from portal.middleware import client_ip
from risk.facts import POSTED_FACTS, ClientFacts

from ..models import AppSession

INSTALLATION_HEADER = "X-Installation-Id"
INSTALLATION_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,64}")
# App headers and the browser facts each one stands for (same shapes, else dropped).
FACT_HEADERS = {
    "screen": "X-Device-Screen",
    "dpr": "X-Device-Scale",
    "tz": "X-Time-Zone",
    "platform": "X-OS-Version",
}
MODEL_HEADER = "X-Device-Model"


def installation_id(request: HttpRequest) -> str | None:
    value = request.headers.get(INSTALLATION_HEADER, "")
    return value if INSTALLATION_SHAPE.fullmatch(value) else None


def device_key(installation: str) -> str:
    """The installation's device id as the timeline and the checkpoint know it (32 hex)."""
    return hashlib.sha256(f"app:{installation}".encode()).hexdigest()[:32]


def _printable(value: str, limit: int) -> str:
    return "".join(ch for ch in value[:limit] if ch.isprintable())


def app_facts(request: HttpRequest, installation: str, *, known_since=None) -> ClientFacts:
    """The client facts of an app request from ``installation``; ``known_since`` is when the
    installation first signed in to this account (None: a new one)."""
    posted = {}
    for name, header in FACT_HEADERS.items():
        value = request.headers.get(header, "")
        if value and POSTED_FACTS[name].fullmatch(value):
            posted[name] = value
    hints = {"mobile": "?1"}
    model = _printable(request.headers.get(MODEL_HEADER, ""), 64)
    if model:
        hints["model"] = model
    platform = request.headers.get("X-App-Platform", "")
    if platform in AppSession.Platform.values:
        hints["platform"] = platform
    age = (timezone.now() - known_since).total_seconds() if known_since else 0.0
    return ClientFacts(
        ip_address=client_ip(request),
        device_key=device_key(installation),
        device_cookie="valid" if known_since else "new",
        device_cookie_age=max(age, 0.0),
        user_agent=_printable(request.headers.get("User-Agent", ""), 512),
        accept_language=_printable(request.headers.get("Accept-Language", ""), 128),
        hints=hints,
        posted=posted,
    )


def first_sign_in(user_id: int, installation: str):
    """When ``installation`` first signed in to the account, or None."""
    return (
        AppSession.objects.filter(user_id=user_id, installation_id=installation)
        .order_by("created_at")
        .values_list("created_at", flat=True)
        .first()
    )


def session_context(request: HttpRequest, session: AppSession) -> RequestContext:
    """The timeline's context for a signed-in app request: the session's installation."""
    facts = app_facts(
        request,
        session.installation_id,
        known_since=first_sign_in(session.user_id, session.installation_id),
    )
    return RequestContext(
        ip_address=facts.ip_address,
        device_id=facts.device_key,
        user_agent=facts.user_agent,
        client=facts,
    )
