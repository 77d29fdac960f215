"""What a request tells the checkpoint about the client, parsed once and defensively.

Everything here comes from the client and can be forged: the facts only ever add or withhold
recognition, and a malformed value is dropped (an unknown device), never an error.
"""

import json
import re
from dataclasses import dataclass, field

from django.http import HttpRequest

from portal.middleware import client_ip

# The hidden form field the optional script fills (static/js/device.js).
FACTS_FIELD = "device_facts"
FACTS_MAX_LENGTH = 1024
HEADER_MAX_LENGTH = 512

# Posted facts we accept, each with the shape a real browser sends; anything else is dropped.
POSTED_FACTS = {
    "screen": re.compile(r"\d{2,5}x\d{2,5}"),
    "dpr": re.compile(r"\d{1,2}(\.\d{1,3})?"),
    "tz": re.compile(r"[A-Za-z_]{1,32}(/[A-Za-z0-9_+\-]{1,32}){0,2}"),
    "platform": re.compile(r"[\w .\-()]{1,40}"),
    "touch": re.compile(r"\d{1,2}"),
}
# Client hints (Chromium sends the first three on every secure request).
HINT_HEADERS = {
    "platform": "Sec-CH-UA-Platform",
    "mobile": "Sec-CH-UA-Mobile",
    "model": "Sec-CH-UA-Model",
}


def _printable(value: str, limit: int = HEADER_MAX_LENGTH) -> str:
    return "".join(ch for ch in value[:limit] if ch.isprintable())


def parse_posted_facts(raw: str) -> tuple[dict[str, str], bool]:
    """The facts the script posted, and whether the field was malformed (then no facts)."""
    if not raw:
        return {}, False
    if len(raw) > FACTS_MAX_LENGTH:
        return {}, True
    try:
        posted = json.loads(raw)
    except (ValueError, RecursionError):  # deep nesting overflows the parser's stack
        return {}, True
    if not isinstance(posted, dict):
        return {}, True
    facts = {}
    for name, pattern in POSTED_FACTS.items():
        value = posted.get(name)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            continue
        value = str(value)
        if pattern.fullmatch(value):
            facts[name] = value
    return facts, False


@dataclass(frozen=True)
class ClientFacts:
    """The client as one request shows it."""

    ip_address: str | None = None
    device_key: str = ""
    # "valid" (our signed cookie came back), "new" (none sent) or "tampered" (a bad signature).
    device_cookie: str = "new"
    # Seconds since the device id was issued (0 for one issued by this very request).
    device_cookie_age: float = 0.0
    user_agent: str = ""
    accept_language: str = ""
    hints: dict[str, str] = field(default_factory=dict)
    posted: dict[str, str] = field(default_factory=dict)
    posted_malformed: bool = False

    @classmethod
    def from_request(cls, request: HttpRequest) -> "ClientFacts":
        raw = request.POST.get(FACTS_FIELD, "") if request.method == "POST" else ""
        posted, malformed = parse_posted_facts(raw)
        hints = {}
        for name, header in HINT_HEADERS.items():
            value = _printable(request.headers.get(header, ""), 64).strip('"')
            if value:
                hints[name] = value
        return cls(
            ip_address=client_ip(request),
            device_key=getattr(request, "device_id", ""),
            device_cookie=getattr(request, "device_cookie", "new"),
            device_cookie_age=getattr(request, "device_cookie_age", 0.0) or 0.0,
            user_agent=_printable(request.headers.get("User-Agent", "")),
            accept_language=_printable(request.headers.get("Accept-Language", ""), 128),
            hints=hints,
            posted=posted,
            posted_malformed=malformed,
        )
