"""Passkeys (WebAuthn): register them, answer a request with one, remove them.

django-otp-webauthn gives the credential model (a django-otp device, so a passkey sits beside
the app and the backup codes), its user handles and a helper around py_webauthn that builds the
browser's options and verifies its answers. Its views are not used: they keep the challenge in
the session, can sign a user in by passkey alone and count no failures. Here a request is a row
(``PasskeyChallenge``) that works like a code that was sent:

- one purpose each (an activation of one case, a back-office sign-in, adding a passkey), so an
  answer given for one is refused for every other;
- answered only from the browser session that asked (``session_binding``), once (the row is
  deleted by the answer that passes), and within ``OTP_WEBAUTHN_TIMEOUT_SECONDS``;
- the same limits as codes: requests come out of the hourly code budget of their purpose, a
  wrong answer (another origin, a bad signature, a counter gone backwards, another account's
  passkey, a malformed body, an expired request) is throttled and counted, and
  ``VERIFICATION_MAX_ATTEMPTS_PER_CODE`` of them burn the request (``CheckResult.BURNED``), which
  the activation counts as a lock-out.

User verification (the fingerprint or face, not a tap) is required for every ceremony. The
services return results instead of raising on a wrong answer, as ``check_code`` does, so the
failure count they write is never rolled back.
"""

import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.translation import gettext as _
from django_otp_webauthn.helpers import WebAuthnHelper
from django_otp_webauthn.models import WebAuthnCredential
from webauthn import (
    base64url_to_bytes,
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    bytes_to_base64url,
    generate_challenge,
    options_to_json_dict,
    parse_authentication_credential_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import UserVerificationRequirement

from accounts.models import User
from audit.services import record_system_event
from portal.errors import DomainError

from .models import Channel, CodeDelivery, PasskeyChallenge, Purpose
from .services import CheckResult, check_hourly_limits

SESSION_KEY = "passkey_binding"
# The longest answer a browser sends (an attestation with a certificate chain fits easily).
MAX_RESPONSE_LENGTH = 16_000
NAME_MAX_LENGTH = 64


class NoPasskeyRequest(DomainError):
    code = "no_passkey_request"
    http_status = 409


class PortalWebAuthnHelper(WebAuthnHelper):
    """django-otp-webauthn's helper with the user's fingerprint or face always required."""

    def get_generate_registration_options_kwargs(self, *, user) -> dict:
        kwargs = super().get_generate_registration_options_kwargs(user=user)
        kwargs["authenticator_selection"].user_verification = UserVerificationRequirement.REQUIRED
        return kwargs


def _helper() -> PortalWebAuthnHelper:
    return PortalWebAuthnHelper(request=None)


def session_binding(session) -> str:
    """The random value that ties passkey requests to this browser session (made on first use)."""
    binding = session.get(SESSION_KEY)
    if not isinstance(binding, str) or len(binding) != 43:
        binding = secrets.token_urlsafe(32)
        session[SESSION_KEY] = binding
    return binding


def _digest(binding: str) -> str:
    return salted_hmac("verification.passkeys.binding", binding, algorithm="sha256").hexdigest()


def passkeys_for(user: User) -> QuerySet[WebAuthnCredential]:
    """The user's passkeys, the most recently used first."""
    return WebAuthnCredential.objects.filter(user=user, confirmed=True).order_by(
        F("last_used_at").desc(nulls_last=True), "-created_at"
    )


def has_passkey(user: User) -> bool:
    return passkeys_for(user).exists()


def _issue(user: User, purpose: str, binding: str, case_id: int | None = None) -> bytes:
    """Replace the user's request for ``purpose`` with a new one; return its challenge.

    Raises ``TooManyCodes`` past the purpose's hourly budget for passkey requests (as many as
    codes, counted apart from them), so requests cannot be asked for without end to reset the
    count of wrong answers.
    """
    destination = f"passkey:{user.pk}"
    check_hourly_limits(user, destination, purpose, passkey=True)
    CodeDelivery.objects.create(
        user=user, channel=Channel.PASSKEY, destination=destination, purpose=purpose
    )
    challenge = generate_challenge()
    now = timezone.now()
    PasskeyChallenge.objects.update_or_create(
        user=user,
        purpose=purpose,
        defaults={
            "case_id": case_id,
            "challenge": bytes_to_base64url(challenge),
            "binding": _digest(binding),
            "valid_until": now + timedelta(seconds=settings.OTP_WEBAUTHN_TIMEOUT_SECONDS),
            "failures": 0,
            "throttling_failure_count": 0,
            "throttling_failure_timestamp": None,
            "created_at": now,
        },
    )
    return challenge


def _request(
    user: User, purpose: str, binding: str, case_id: int | None = None
) -> PasskeyChallenge | None:
    """This session's request for ``purpose`` (and ``case_id``), locked; None if there is none."""
    row = PasskeyChallenge.objects.select_for_update().filter(user=user, purpose=purpose).first()
    return row if _belongs(row, binding) and row.case_id == case_id else None


def _belongs(row: PasskeyChallenge | None, binding: str) -> bool:
    """Whether ``row`` is a request this browser session (``binding``) asked for."""
    return (
        row is not None and bool(binding) and constant_time_compare(row.binding, _digest(binding))
    )


# --- Answering a request (activation, back-office sign-in) ----------------------------------


@dataclass(frozen=True)
class PasskeyCheck:
    result: CheckResult
    passkey: WebAuthnCredential | None = None
    # For the timeline and the audit trail: why an answer was refused, in a word.
    why: str = ""


def authentication_options(
    *, user: User, purpose: str, binding: str, case_id: int | None = None
) -> dict[str, Any]:
    """A new request for ``purpose``, as the options ``navigator.credentials.get`` takes."""
    descriptors = WebAuthnCredential.get_credential_descriptors_for_user(user)
    if not descriptors:
        raise NoPasskeyRequest(_("There is no passkey on your account."))
    challenge = _issue(user, purpose, binding, case_id)
    options = generate_authentication_options(
        rp_id=settings.OTP_WEBAUTHN_RP_ID,
        challenge=challenge,
        timeout=settings.OTP_WEBAUTHN_TIMEOUT_SECONDS * 1000,
        allow_credentials=descriptors,
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return options_to_json_dict(options)


def _parse_json(response: str) -> dict | None:
    if not isinstance(response, str) or len(response) > MAX_RESPONSE_LENGTH:
        return None
    try:
        data = json.loads(response)
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested thousands deep
        return None
    return data if isinstance(data, dict) else None


def _why(error: Exception) -> str:
    """A word for what py_webauthn refused (its messages are for developers)."""
    message = str(error).lower()
    for needle, why in (
        ("origin", "origin"),
        ("challenge", "challenge"),
        ("sign count", "counter"),
        ("user verification", "user_verification"),
        ("rp id", "rp_id"),
        ("signature", "signature"),
    ):
        if needle in message:
            return why
    return "malformed"


def _refuse(row: PasskeyChallenge, why: str, result: CheckResult) -> PasskeyCheck:
    """Count a wrong answer against the request; enough of them burn it."""
    row.failures += 1
    row.throttle_increment(commit=False)
    if row.failures >= settings.VERIFICATION_MAX_ATTEMPTS_PER_CODE:
        row.delete()
        return PasskeyCheck(CheckResult.BURNED, why=why)
    row.save(update_fields=["failures", "throttling_failure_count", "throttling_failure_timestamp"])
    return PasskeyCheck(result, why=why)


def _not_answerable_now(row: PasskeyChallenge) -> PasskeyCheck | None:
    """Refuse any answer while wrong ones are being spaced out, and count one that came late."""
    allowed, _info = row.verify_is_allowed()
    if not allowed:
        return PasskeyCheck(CheckResult.THROTTLED, why="throttled")
    if timezone.now() >= row.valid_until:
        return _refuse(row, "expired", CheckResult.EXPIRED)
    return None


def _credential_of(credential_id: bytes) -> WebAuthnCredential | None:
    digest = WebAuthnCredential.get_credential_id_sha256(credential_id)
    return (
        WebAuthnCredential.objects.select_for_update()
        .filter(credential_id_sha256=digest, confirmed=True)
        .first()
    )


@transaction.atomic(savepoint=False)
def check_assertion(
    *, user: User, purpose: str, binding: str, response: str, case_id: int | None = None
) -> PasskeyCheck:
    """Check the browser's answer to this session's request for ``purpose`` (and ``case_id``).

    ``NO_CODE`` if there is no such request (never asked, already answered, or asked from
    another browser); ``THROTTLED`` while wrong answers are being spaced out; otherwise the
    answer is checked and a wrong one counted.
    """
    row = _request(user, purpose, binding, case_id)
    if row is None:
        return PasskeyCheck(CheckResult.NO_CODE, why="no_request")
    if (not_now := _not_answerable_now(row)) is not None:
        return not_now
    data = _parse_json(response)
    if data is None:
        return _refuse(row, "malformed", CheckResult.INVALID)
    try:
        credential = parse_authentication_credential_json(data)
    except (WebAuthnException, ValueError, TypeError, KeyError):
        return _refuse(row, "malformed", CheckResult.INVALID)
    passkey = _credential_of(credential.raw_id)
    if passkey is None:
        return _refuse(row, "unknown_passkey", CheckResult.INVALID)
    if passkey.user_id != user.pk:
        return _refuse(row, "other_account", CheckResult.INVALID)
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=base64url_to_bytes(row.challenge),
            expected_rp_id=settings.OTP_WEBAUTHN_RP_ID,
            expected_origin=list(settings.OTP_WEBAUTHN_ALLOWED_ORIGINS),
            credential_public_key=passkey.public_key,
            credential_current_sign_count=passkey.sign_count,
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError) as error:
        return _refuse(row, _why(error), CheckResult.INVALID)
    row.delete()
    passkey.sign_count = verified.new_sign_count
    passkey.backup_state = verified.credential_backed_up
    passkey.set_last_used_timestamp(commit=False)
    passkey.save(update_fields=["sign_count", "backup_state", "last_used_at"])
    return PasskeyCheck(CheckResult.OK, passkey=passkey)


# --- Adding and removing a passkey (callers check the proof first) --------------------------


def open_registration(*, user: User, binding: str) -> None:
    """After the owner proved it is them: this session may add one passkey, for a few minutes."""
    _issue(user, Purpose.FACTOR_CHANGE, binding)


def registration_pending(*, user: User, binding: str) -> bool:
    row = PasskeyChallenge.objects.filter(user=user, purpose=Purpose.FACTOR_CHANGE).first()
    return _belongs(row, binding) and timezone.now() < row.valid_until


@transaction.atomic
def registration_options(*, user: User, binding: str) -> dict[str, Any]:
    """The options ``navigator.credentials.create`` takes, for this session's open request."""
    row = _request(user, Purpose.FACTOR_CHANGE, binding)
    if row is None or timezone.now() >= row.valid_until:
        raise NoPasskeyRequest(_("Prove it is you again before adding a passkey."))
    kwargs = _helper().get_generate_registration_options_kwargs(user=user)
    kwargs["challenge"] = base64url_to_bytes(row.challenge)
    options = options_to_json_dict(generate_registration_options(**kwargs))
    options["extensions"] = _helper().get_registration_extensions()
    return options


def clean_name(name: str) -> str:
    name = " ".join((name or "").split())[:NAME_MAX_LENGTH]
    return name or _("My passkey")


@transaction.atomic(savepoint=False)
def complete_registration(
    *, user: User, binding: str, name: str, response: str, ip: str | None = None
) -> PasskeyCheck:
    """Verify the browser's new passkey and keep it under ``name``; audited either way."""
    row = _request(user, Purpose.FACTOR_CHANGE, binding)
    if row is None:
        return PasskeyCheck(CheckResult.NO_CODE, why="no_request")
    outcome = _register(row, user, clean_name(name), response)
    kind = "factor.passkey_added" if outcome.result == CheckResult.OK else "factor.passkey_refused"
    data: dict[str, Any] = {"user_id": user.pk}
    if outcome.passkey is not None:
        data.update(passkey=outcome.passkey.pk, name=outcome.passkey.name)
    else:
        data.update(result=str(outcome.result), why=outcome.why)
    record_system_event(kind=kind, actor=user, data=data, ip=ip)
    return outcome


def _register(row: PasskeyChallenge, user: User, name: str, response: str) -> PasskeyCheck:
    if (not_now := _not_answerable_now(row)) is not None:
        return not_now
    data = _parse_json(response)
    try:
        if data is None:
            raise ValueError("not a JSON object")
        credential = parse_registration_credential_json(data)
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=base64url_to_bytes(row.challenge),
            expected_rp_id=settings.OTP_WEBAUTHN_RP_ID,
            expected_origin=list(settings.OTP_WEBAUTHN_ALLOWED_ORIGINS),
            require_user_verification=True,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError) as error:
        return _refuse(row, _why(error), CheckResult.INVALID)
    digest = WebAuthnCredential.get_credential_id_sha256(verified.credential_id)
    if WebAuthnCredential.objects.filter(credential_id_sha256=digest).exists():
        return _refuse(row, "already_registered", CheckResult.INVALID)
    helper = _helper()
    passkey = helper.create_credential(user, verified, credential, data)
    passkey.name = name
    passkey.confirmed = True
    passkey.save()
    helper.create_attestation(
        passkey, verified.attestation_object, credential.response.client_data_json
    )
    row.delete()
    return PasskeyCheck(CheckResult.OK, passkey=passkey)


def remove(*, user: User, passkey_id: int, ip: str | None = None) -> bool:
    """Remove one of the user's passkeys (the caller checked the proof); False if not theirs."""
    passkey = WebAuthnCredential.objects.filter(user=user, pk=passkey_id).first()
    if passkey is None:
        return False
    name = passkey.name
    passkey.delete()
    record_system_event(
        kind="factor.passkey_removed",
        actor=user,
        data={"user_id": user.pk, "passkey": passkey_id, "name": name},
        ip=ip,
    )
    return True
