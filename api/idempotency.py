"""``Idempotency-Key`` with Stripe's semantics: a retried request gets the first answer again.

A client that timed out on a bad network cannot know whether its request was carried out; it
sends the request again with the same key and gets the first response back (marked
``Idempotent-Replayed: true``) instead of a second code sent or a second attempt spent. The key
belongs to the signed-in user and lives ``API_IDEMPOTENCY_KEY_HOURS``; the same key with another
body or on another endpoint is refused with 409 ``idempotency_key_reused``, and while the first
request is still being answered its retries get 409 ``idempotency_key_in_use``.

What is not stored, so that a retry runs afresh: refusals of the caller (401, 403), rate limits
(429), server errors and exceptions the API does not answer itself.
"""

import functools
import hashlib
import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import QueryDict
from django.utils import timezone, translation
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from .models import IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Printable ASCII, space included (as Stripe allows), 1 to 255 characters.
VALID_KEY = re.compile(r"[\x20-\x7e]{1,255}")
# The response headers a replay must carry to mean what the first answer meant.
KEPT_HEADERS = ("Retry-After", "Location", "Content-Language")
# Answers that say nothing final about the request: the caller may retry and run it afresh.
NOT_STORED = {
    status.HTTP_401_UNAUTHORIZED,
    status.HTTP_403_FORBIDDEN,
    status.HTTP_429_TOO_MANY_REQUESTS,
}
PURGE_BATCH_SIZE = 5000


class InvalidIdempotencyKey(exceptions.APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_idempotency_key"
    default_detail = _("The Idempotency-Key header must be 1 to 255 printable ASCII characters.")


class IdempotencyKeyReused(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "idempotency_key_reused"
    default_detail = _(
        "This Idempotency-Key was already used for a different request; use a new key."
    )


class IdempotencyKeyInUse(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "idempotency_key_in_use"
    default_detail = _(
        "A request with this Idempotency-Key is still being answered; retry in a moment."
    )
    wait = 1  # DRF's exception handler turns it into Retry-After


def _now():
    return timezone.now()


def request_fingerprint(request: Request) -> str:
    """SHA-256 of the method, the path and the body as canonical JSON."""
    data = request.data
    if isinstance(data, QueryDict):
        data = {key: data.getlist(key) for key in sorted(data)}
    body = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    material = "\n".join([request.method, request.path, body])
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def _claim(*, user, key: str, endpoint: str, fingerprint: str) -> tuple[IdempotencyRecord, bool]:
    """Insert the record in progress, committed at once; or return the one already there."""
    now = _now()
    for _attempt in range(2):
        try:
            # Committed before the view runs: a concurrent request with the same key then finds
            # it (or waits on the unique index until it is committed) and does not run the view.
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    user=user,
                    key=key,
                    endpoint=endpoint,
                    request_hash=fingerprint,
                    created_at=now,
                    expires_at=now + timedelta(hours=settings.API_IDEMPOTENCY_KEY_HOURS),
                )
            return record, True
        except IntegrityError:
            record = IdempotencyRecord.objects.filter(user=user, key=key).first()
            if record is None:
                continue  # deleted in between (a failed first request): claim it afresh
            if record.expires_at > now:
                return record, False
            # Expired but not purged yet: it no longer counts. The conditional delete lets only
            # one of two concurrent retries remove it.
            IdempotencyRecord.objects.filter(pk=record.pk, expires_at__lte=now).delete()
    return record, False


# Refusals that say "try again in a moment": a retry with the same key after the wait must get
# a fresh answer, not this one replayed for a day.
TRANSIENT_ERRORS = frozenset({"throttled", "delivery_failed", "case_in_review"})


def _error_code(response: Response) -> str | None:
    data = response.data
    return data.get("code") if isinstance(data, dict) and response.status_code >= 400 else None


def _take_over_abandoned(record: IdempotencyRecord) -> bool:
    """Claim a record still "in progress" long after any request could still be running (its
    process was killed mid-request: the transaction it ran in was rolled back), so the client's
    retry is answered instead of being told to wait until the key expires. Of two retries, the
    conditional update lets one win."""
    now = _now()
    abandoned_before = now - timedelta(seconds=settings.API_IDEMPOTENCY_ABANDONED_SECONDS)
    return bool(
        IdempotencyRecord.objects.filter(
            pk=record.pk, status_code__isnull=True, created_at__lte=abandoned_before
        ).update(created_at=now)
    )


def _replay(record: IdempotencyRecord) -> Response:
    headers = {**record.response_headers, REPLAYED_HEADER: "true"}
    return Response(record.response_body, status=record.status_code, headers=headers)


def _store(record: IdempotencyRecord, response: Response) -> None:
    headers = {name: response[name] for name in KEPT_HEADERS if response.has_header(name)}
    # The locale middleware adds Content-Language after the view; the body is in this language.
    headers.setdefault("Content-Language", translation.get_language() or settings.LANGUAGE_CODE)
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        status_code=response.status_code,
        # As the renderer would write it (lazy translations, dates, decimals as strings).
        response_body=json.loads(json.dumps(response.data, cls=JSONEncoder)),
        response_headers=headers,
    )


def _forget(record: IdempotencyRecord) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk).delete()


def idempotent(view_method: Callable[..., Response]) -> Callable[..., Response]:
    """Honour an ``Idempotency-Key`` header on a DRF view method (``post``, ``put``, …).

    The header is optional; without it, or for an anonymous caller, the view simply runs.
    """

    @functools.wraps(view_method)
    def wrapper(view, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get(HEADER)
        user = request.user
        if key is None or user is None or not user.is_authenticated:
            return view_method(view, request, *args, **kwargs)
        if not VALID_KEY.fullmatch(key):
            raise InvalidIdempotencyKey()
        endpoint = f"{request.method} {request.path}"[:300]
        fingerprint = request_fingerprint(request)
        record, created = _claim(user=user, key=key, endpoint=endpoint, fingerprint=fingerprint)
        if not created:
            if record.request_hash != fingerprint or record.endpoint != endpoint:
                raise IdempotencyKeyReused()
            if record.status_code is not None:
                return _replay(record)
            if not _take_over_abandoned(record):
                raise IdempotencyKeyInUse()

        try:
            response = view_method(view, request, *args, **kwargs)
        except Exception as error:
            try:
                # An error the API answers (a domain error, invalid input) is the answer to
                # this request like any other; anything else becomes a 500 below.
                response = view.handle_exception(error)
            except BaseException:
                _forget(record)
                raise
        except BaseException:
            _forget(record)
            raise
        if (
            response.status_code in NOT_STORED
            or response.status_code >= 500
            or _error_code(response) in TRANSIENT_ERRORS
        ):
            _forget(record)
        else:
            try:
                _store(record, response)
            except Exception:
                # Never leave the key claimed with no answer: a retry would wait for nothing.
                _forget(record)
                raise
        return response

    return wrapper


def purge_expired_records(*, batch_size: int = PURGE_BATCH_SIZE) -> int:
    """Delete the records past their expiry, in batches; return how many were deleted."""
    deleted = 0
    while True:
        batch = list(
            IdempotencyRecord.objects.filter(expires_at__lte=_now()).values_list("pk", flat=True)[
                :batch_size
            ]
        )
        if not batch:
            return deleted
        deleted += IdempotencyRecord.objects.filter(pk__in=batch).delete()[0]
