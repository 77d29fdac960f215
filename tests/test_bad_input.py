"""Replay the bad input an outside review sent (issue 10, items 9 to 12) against the real stack.

Each request goes through the real URLs, middleware and views: a signed-in customer page, the
back office with a staff member whose second factor is verified, and the core's signed
callbacks. None may answer 5xx, and none may change anything.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from django.conf import settings
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice
from standardwebhooks.webhooks import Webhook

from activation.models import ActivationCase, FailureReason, OverrideRequest
from activation.services import staff as actions
from activation.tests.helpers import business_state
from activation.tests.test_backoffice import current_code, sign_in
from tests.factories import PASSWORD, open_review_case

pytestmark = pytest.mark.django_db

CASES = "/backoffice/activation/activationcase/"
BULK_RECOVERY = "/backoffice/bulk-recovery/"


@dataclass
class Stage:
    """What the bad requests are aimed at."""

    staff: Client  # a supervisor, signed in with password and authenticator
    anonymous: Client
    case: ActivationCase  # waiting for review, with an override waiting for approval
    override: OverrideRequest


@pytest.fixture
def stage(agent, supervisor) -> Stage:
    case = open_review_case(reason=FailureReason.RISK_REVIEW)
    override = actions.request_override(
        case_id=case.pk,
        staff=agent,
        kind=OverrideRequest.Kind.MARK_ACTIVATED,
        reason="The core says the line is active.",
        core_reference="ACT-1",
    )
    staff = Client(raise_request_exception=False)
    sign_in(staff, supervisor, current_code(supervisor))
    assert staff.get(CASES).status_code == 200
    return Stage(
        staff=staff,
        anonymous=Client(raise_request_exception=False),
        case=case,
        override=override,
    )


def _act(action: str, **fields) -> Callable[[Stage], object]:
    return lambda s: s.staff.post(f"{CASES}{s.case.pk}/act/{action}/", fields)


def _callback(change: Callable[[dict], None], webhook_id: str = "msg_bad", *, tail: str = ""):
    def send(s: Stage):
        event = {
            "id": "evt_1",
            "type": "activation.failed",
            "created_at": datetime.now(UTC).isoformat(),
            "data": {
                "activation_id": "act_1",
                "credit_line_ref": s.case.credit_line.reference,
                "status": "inactive",
                "reason": "timeout",
                "version": 1,
            },
        }
        change(event)
        body = json.dumps(event)
        if tail:  # members json.dumps cannot write, such as 5,000 levels of nesting
            body = body[:-1] + ", " + tail + "}"
        signature = Webhook(settings.CORE_WEBHOOK_SECRET).sign(webhook_id, datetime.now(UTC), body)
        headers = {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(datetime.now(UTC).timestamp())),
            "webhook-signature": signature,
        }
        return s.anonymous.post(
            "/api/v1/core/events/", data=body, content_type="application/json", headers=headers
        )

    return send


def _bulk_recovery(since: str, until: str) -> Callable[[Stage], object]:
    """Ask for a bulk recovery, then open the page that lists them: neither may answer 5xx."""

    def send(s: Stage):
        asked = s.staff.post(BULK_RECOVERY, {"since": since, "until": until, "reason": "outage"})
        return max(asked, s.staff.get(BULK_RECOVERY), key=lambda response: response.status_code)

    return send


def _method(method: str, url: str) -> Callable[[Stage], object]:
    return lambda s: getattr(s.staff, method)(url.format(case=s.case.pk))


postgres = pytest.mark.postgres
BAD_INPUT = [
    # 9. A sign-in username longer than django-axes' 255-character column.
    pytest.param(
        lambda s: s.anonymous.post(
            "/accounts/login/", {"username": "a" * 256, "password": PASSWORD}
        ),
        id="9-login-username-256",
    ),
    pytest.param(
        lambda s: s.anonymous.post(
            "/accounts/login/", {"username": "8" * 1000, "password": PASSWORD}
        ),
        id="9-login-username-1000",
    ),
    # 10. Digits Python counts that int() refuses; a non-number override; NUL in typed text;
    # django-otp's admin pages for a device that does not exist.
    pytest.param(lambda s: s.staff.get(CASES, {"q": "²³⁴⁵"}), id="10-search-superscripts"),
    pytest.param(lambda s: s.staff.get(f"{CASES}%C2%B2/change/"), id="10-case-url-superscript"),
    pytest.param(lambda s: s.staff.get(f"{CASES}%C2%B2/history/"), id="10-history-superscript"),
    pytest.param(
        lambda s: s.staff.post(
            f"{CASES}{s.case.pk}/act/approve_override/", {"override_id": "abc", "reason": "ok"}
        ),
        id="10-approve-override-abc",
    ),
    pytest.param(
        lambda s: s.staff.post(
            f"{CASES}{s.case.pk}/act/reject_override/", {"override_id": "9" * 30, "reason": "ok"}
        ),
        id="10-reject-override-huge",
    ),
    pytest.param(_act("note", text="a\x00b"), id="10-note-nul", marks=postgres),
    pytest.param(
        _act("close", reason_code="other", reason="gone\x00"),
        id="10-close-reason-nul",
        marks=postgres,
    ),
    pytest.param(
        _act("close", reason_code="other\x00", reason="gone"),
        id="10-close-code-nul",
        marks=postgres,
    ),
    pytest.param(lambda s: s.staff.get(f"{CASES}?q=%00"), id="10-search-nul", marks=postgres),
    pytest.param(
        lambda s: s.staff.get(f"{CASES}?state__exact=%00"), id="10-filter-nul", marks=postgres
    ),
    pytest.param(
        lambda s: s.staff.get("/backoffice/otp_totp/totpdevice/987654/config/"),
        id="10-totp-config-missing",
    ),
    pytest.param(
        lambda s: s.staff.get("/backoffice/otp_totp/totpdevice/987654/qrcode/"),
        id="10-totp-qrcode-missing",
    ),
    # 11. Signed core callbacks the database could not store.
    pytest.param(
        _callback(lambda e: e["data"].update(reason="time\x00out")),
        id="11-callback-nul",
        marks=postgres,
    ),
    pytest.param(
        _callback(lambda e: e["data"].update(version=float("nan"))),
        id="11-callback-nan",
        marks=postgres,
    ),
    pytest.param(
        _callback(lambda e: e["data"].update(version=2**63)), id="11-callback-version-2-63"
    ),
    pytest.param(_callback(lambda e: None, webhook_id="m" * 200), id="11-callback-webhook-id-200"),
    pytest.param(_callback(lambda e: e.update(type="t" * 100)), id="11-callback-type-100"),
    pytest.param(
        _callback(lambda e: e["data"].update(activation_id="a" * 100)),
        id="11-callback-activation-id-100",
    ),
    # Found by the review of the fixes: lone surrogates, deep nesting, a year-1 window.
    pytest.param(
        _callback(lambda e: e["data"].update(note="\ud800")),
        id="11-callback-lone-surrogate",
        marks=postgres,
    ),
    pytest.param(
        _callback(lambda e: e["data"].update({"\ud800": "x"})),
        id="11-callback-lone-surrogate-key",
        marks=postgres,
    ),
    pytest.param(
        _callback(lambda e: None, tail='"z": ' + "[" * 5000 + "]" * 5000),
        id="11-callback-nested-5000-deep",
    ),
    pytest.param(
        _bulk_recovery("0001-01-01 00:00", "0001-01-02 00:00"),
        id="bulk-recovery-year-1",
        marks=postgres,
    ),
    pytest.param(
        _bulk_recovery("9999-12-31 23:59", "9999-12-31 23:59:59"), id="bulk-recovery-year-9999"
    ),
    # 12. Methods no back-office page is written for.
    *(
        pytest.param(_method(method, url), id=f"12-{method}-{name}")
        for method in ("put", "delete", "trace")
        for name, url in (
            ("queue", CASES),
            ("case", CASES + "{case}/change/"),
            ("exports", "/backoffice/exports/"),
            ("login", "/backoffice/login/"),
        )
    ),
]


@pytest.mark.parametrize("send", BAD_INPUT)
def test_bad_input_gets_a_clear_answer_and_changes_nothing(stage, send):
    before = business_state(), TOTPDevice.objects.count()
    response = send(stage)
    assert response.status_code < 500, response.content[:500]
    assert (business_state(), TOTPDevice.objects.count()) == before
    # The staff session survives: a bad request is refused, it does not sign anyone out.
    assert stage.staff.get(CASES).status_code == 200
