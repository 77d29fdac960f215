"""Log lines that say which request, user, case and task they belong to, and hold no secrets.

Each request and each Celery task keeps a small context (``request_id``, ``user_id``,
``case_id``, ``task_id``, ``task_name``) in a context variable; ``ContextFilter`` copies it onto
every record, and the formatters write it as one JSON object per line (production) or as a
readable line (development). Both formatters mask phone numbers, bearer tokens, webhook secrets
and the configured secrets in the finished line, whatever logged them.
"""

import logging
import re
from collections.abc import Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from functools import cache
from types import MappingProxyType
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as BaseJsonFormatter

CONTEXT_FIELDS = ("request_id", "user_id", "case_id", "task_id", "task_name")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("log_context", default=_EMPTY)


def current() -> Mapping[str, Any]:
    """Return the fields every log line of this request or task carries."""
    return _context.get()


def start(**fields: Any) -> Token:
    """Begin the context of a request or a task, holding only ``fields``; ``end`` closes it."""
    return _context.set(MappingProxyType(fields))


def end(token: Token) -> None:
    """Restore the context as it was before ``start`` returned ``token``."""
    try:
        _context.reset(token)
    except ValueError:
        # The token came from another context (a thread handed over work): start afresh.
        _context.set(_EMPTY)


def clear() -> None:
    """Forget the context: the request or task it belonged to is over."""
    _context.set(_EMPTY)


def bind(**fields: Any) -> None:
    """Add ``fields`` (``case_id=…``) to every log line until the request or task ends."""
    _context.set(MappingProxyType({**_context.get(), **fields}))


class ContextFilter(logging.Filter):
    """Copy the request's or task's context onto each record (a field given in ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        for field in CONTEXT_FIELDS:
            if not hasattr(record, field):
                setattr(record, field, context.get(field))
        return True


# E.164 numbers (+ and 8 to 15 digits, perhaps grouped by spaces or dashes) and mainland mobile
# numbers as people type them (11 digits from 13…19, perhaps after 86). Not inside a word, so
# hexadecimal ids and longer numbers (epoch milliseconds) are left alone.
_PHONE_NUMBER = re.compile(
    r"(?<![\w+])(?:\+\d(?:[ -]?\d){7,14}|(?:86[ -]?)?1[3-9]\d(?:[ -]?\d){8})(?!\d)"
)
_BEARER_TOKEN = re.compile(r"(?i)\b(bearer\s+)[\w.~+/=-]+")
_WEBHOOK_SECRET = re.compile(r"\bwhsec_[\w+/=-]+")
# Shorter configured values are not searched for: they could match ordinary words.
_MIN_SECRET_LENGTH = 12


def _mask_phone_number(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return ("+" if match.group().startswith("+") else "") + "***" + digits[-4:]


def _configured_secrets() -> tuple[str, ...]:
    from django.conf import settings

    if not settings.configured:  # a line logged before Django set up
        return ()
    names = (
        "SECRET_KEY",
        "CORE_API_TOKEN",
        "CORE_WEBHOOK_SECRET",
        "SMS_GATEWAY_TOKEN",
        "METRICS_TOKEN",
    )
    return _searchable(tuple(str(getattr(settings, name, "") or "") for name in names))


@cache
def _searchable(values: tuple[str, ...]) -> tuple[str, ...]:
    # The webhook secret is also used (and could be logged) without its prefix.
    found = {*values, *(value.removeprefix("whsec_") for value in values)}
    # Longest first, so a secret that contains another is masked whole.
    return tuple(sorted((v for v in found if len(v) >= _MIN_SECRET_LENGTH), key=len, reverse=True))


def redact(text: str) -> str:
    """Mask phone numbers (but their last four digits), bearer tokens and secrets in ``text``."""
    for secret in _configured_secrets():
        text = text.replace(secret, "[secret]")
    text = _WEBHOOK_SECRET.sub("whsec_[secret]", text)
    text = _BEARER_TOKEN.sub(r"\1[secret]", text)
    return _PHONE_NUMBER.sub(_mask_phone_number, text)


def _utc_timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(BaseJsonFormatter):
    """One JSON object per line: time (UTC), level, logger, message, the context, any extras."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message", *CONTEXT_FIELDS],
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
            # Django attaches the request object to some records; its repr is noise here.
            reserved_attrs=[*RESERVED_ATTRS, "request"],
        )

    def add_fields(self, log_data: dict[str, Any], record, message_dict) -> None:
        log_data["time"] = _utc_timestamp(record)
        super().add_fields(log_data, record, message_dict)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class ConsoleFormatter(logging.Formatter):
    """A readable line for development, the known context fields at its end."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        context = " ".join(
            f"{field}={value}"
            for field in CONTEXT_FIELDS
            if (value := getattr(record, field, None)) is not None
        )
        return f"{line} [{context}]" if context else line

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
