"""The customer API: what the web pages do, through the same services, for the mobile app."""

import base64
from collections.abc import Iterator
from contextlib import contextmanager

from django.http import Http404
from django.utils.crypto import salted_hmac
from django.utils.translation import get_language, gettext_lazy
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.limits import SignInLimited
from activation import selectors, services
from activation.errors import CaseNotFound
from activation.models import ActivationCase, CaseState
from activation.reasons import explain
from activation.services.checkpoint import stronger_channel
from activation.transitions import TransitionNotAllowed
from portal.errors import DomainError, RateLimited
from portal.ratelimits import retry_wait
from verification.models import Channel
from verification.services import CheckResult, channel_options, seconds_until_resend

from ..idempotency import idempotent
from . import serializers as s
from . import sessions
from .clients import INSTALLATION_HEADER, installation_id, session_context

IN_PROGRESS = frozenset({CaseState.SUBMITTING, CaseState.AWAITING_CONFIRMATION})
RETRYABLE = frozenset({CaseState.FAILED, CaseState.PENDING_VERIFICATION})

APP_HEADERS = [
    OpenApiParameter(
        INSTALLATION_HEADER,
        str,
        OpenApiParameter.HEADER,
        required=False,
        description="The app installation's stable random id (16–64 of A–Z a–z 0–9 _ -).",
    ),
]
DEVICE_TOKEN_HEADER = "X-Device-Token"  # noqa: S105 - a header name
APP_HEADERS.append(
    OpenApiParameter(
        DEVICE_TOKEN_HEADER,
        str,
        OpenApiParameter.HEADER,
        required=False,
        description="The device token an earlier sign-in to this account gave this "
        "installation: it lets the app sign in even after many wrong passwords elsewhere.",
    )
)
IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Retrying with the same key and body returns the first answer (24 hours).",
)


class MissingInstallation(DomainError):
    code = "installation_id_required"


class InstallationMismatch(DomainError):
    code = "installation_mismatch"
    http_status = status.HTTP_401_UNAUTHORIZED


class SessionNotFound(DomainError):
    code = "session_not_found"
    http_status = status.HTTP_404_NOT_FOUND


class CaseNotRetryable(DomainError):
    code = "case_not_retryable"
    http_status = status.HTTP_409_CONFLICT


class CaseInReview(DomainError):
    code = "case_in_review"
    http_status = status.HTTP_409_CONFLICT


class StepUpRequired(DomainError):
    code = "step_up_required"
    http_status = status.HTTP_403_FORBIDDEN


class DeliveryFailed(DomainError):
    code = "delivery_failed"
    http_status = status.HTTP_422_UNPROCESSABLE_ENTITY


class WrongCode(DomainError):
    http_status = status.HTTP_422_UNPROCESSABLE_ENTITY


class IsAppCustomer(BasePermission):
    """Signed in through the app (an access token of a live AppSession), and still on the
    installation the session was issued to."""

    def has_permission(self, request, view) -> bool:
        session = getattr(request, "app_session", None)
        if session is None:
            return False
        sent = request.headers.get(INSTALLATION_HEADER)
        if sent is not None and sent != session.installation_id:
            raise InstallationMismatch(
                _("This token belongs to another installation of the app; sign in again.")
            )
        return True


class CustomerView(APIView):
    permission_classes = [IsAppCustomer]

    def context(self):
        return session_context(self.request._request, self.request.app_session)

    def limit(self) -> None:
        """The web's retry limits: per customer and per address."""
        wait = retry_wait(self.request._request)
        if wait:
            raise RateLimited(
                _("Too many requests in a short time. Please wait a moment."), retry_after=wait
            )


def case_data(case: ActivationCase) -> dict:
    """The case as the app sees it (times in the portal's time zone, like every other)."""
    explanation = explain(case.failure_reason)
    return s.CaseSerializer(_case_fields(case, explanation)).data


def _case_fields(case: ActivationCase, explanation) -> dict:
    return {
        "id": case.pk,
        "state": case.state,
        "state_label": str(CaseState(case.state).label),
        "in_progress": case.state in IN_PROGRESS,
        "can_retry": case.state in RETRYABLE,
        "opened_at": case.opened_at,
        "state_changed_at": case.state_changed_at,
        "explanation": None
        if explanation is None
        else {
            "reason": explanation.reason,
            "title": str(explanation.title),
            "what_happened": str(explanation.what_happened),
            "what_to_do": str(explanation.what_to_do),
            "waiting_helps": explanation.waiting_helps,
        },
    }


@contextmanager
def case_still_retryable() -> Iterator[None]:
    """The case moved on (verified elsewhere, with staff, settled): 409, with its state."""
    try:
        yield
    except TransitionNotAllowed as error:
        raise CaseNotRetryable(
            _("This case cannot be retried now."), state=error.details["current"]
        ) from None


def _case(request, case_id: int) -> ActivationCase:
    try:
        return selectors.case_for_customer(request.user, case_id)
    except Http404 as error:
        raise CaseNotFound(_("There is no such case among yours.")) from error


# --- Signing in and out -------------------------------------------------------------------


class SignInView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=s.SignInSerializer,
        responses={200: s.TokensSerializer},
        parameters=APP_HEADERS,
        tags=["customer: sign-in"],
        summary="Sign the app in with phone number (or username) and password",
    )
    def post(self, request):
        data = s.SignInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        installation = installation_id(request)
        if installation is None:
            raise MissingInstallation(
                _("Send the app installation's id in the X-Installation-Id header.")
            )
        try:
            tokens = sessions.sign_in(
                request._request,
                installation=installation,
                device_token=request.headers.get(DEVICE_TOKEN_HEADER),
                **data.validated_data,
            )
        except SignInLimited as limited:
            raise RateLimited(
                limited.reason or _("Too many sign-in attempts. Please wait, then try again."),
                retry_after=limited.seconds,
            ) from None
        return Response(_tokens(tokens, tokens.session))


def _tokens(tokens: sessions.Tokens, current) -> dict:
    return s.TokensSerializer(
        {
            "access": tokens.access,
            "refresh": tokens.refresh,
            "token_type": "Bearer",
            "expires_in": tokens.expires_in,
            "session": tokens.session,
            "device_token": tokens.device_token,
        },
        context={"current": current},
    ).data


class RefreshView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        request=s.RefreshSerializer,
        responses={200: s.TokensSerializer},
        tags=["customer: sign-in"],
        summary="Trade the refresh token for a new pair (the old one stops working)",
    )
    def post(self, request):
        data = s.RefreshSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        tokens = sessions.refresh(data.validated_data["refresh"])
        return Response(_tokens(tokens, tokens.session))


class SessionsView(CustomerView):
    @extend_schema(responses={200: s.AppSessionSerializer(many=True)}, tags=["customer: sign-in"])
    def get(self, request):
        """The app installations signed in to this account."""
        return Response(
            s.AppSessionSerializer(
                sessions.live_sessions(request.user),
                many=True,
                context={"current": request.app_session},
            ).data
        )


class SessionView(CustomerView):
    @extend_schema(responses={204: None}, tags=["customer: sign-in"])
    def delete(self, request, session_id: int):
        """Sign one installation out (this one too): its tokens stop working at once."""
        if not sessions.revoke(request.user, session_id):
            raise SessionNotFound(_("There is no such signed-in installation."))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- Credit lines and cases -------------------------------------------------------------


class CreditLinesView(CustomerView):
    @extend_schema(responses={200: s.CreditLineSerializer(many=True)}, tags=["customer: cases"])
    def get(self, request):
        """The customer's credit lines, each with its cases newest first."""
        lines = selectors.credit_lines_for_customer(request.user)
        return Response(
            [
                {
                    "reference": line.reference,
                    "product_name": line.product_name,
                    "status": line.status,
                    "cases": [case_data(case) for case in line.cases.all()],
                }
                for line in lines
            ]
        )


class CaseView(CustomerView):
    # The app polls this: its session is checked in the statement that reads the case.
    case_read_with_session = True

    @extend_schema(responses={200: s.CaseSerializer}, tags=["customer: cases"])
    def get(self, request, case_id: int):
        """A case's state and, if it failed, what happened and what to do."""
        case = getattr(request, "app_case", None) or _case(request, case_id)
        return Response(case_data(case), headers={"Cache-Control": "no-store"})


class ChannelsView(CustomerView):
    @extend_schema(responses={200: s.ChannelSerializer(many=True)}, tags=["customer: cases"])
    def get(self, request, case_id: int):
        """The ways this customer can verify: SMS, e-mail, authenticator app, passkey."""
        _case(request, case_id)
        return Response(
            [
                {
                    "channel": option.channel,
                    "label": option.label,
                    "destination": option.destination,
                    "sends_code": option.sends_code,
                }
                for option in channel_options(request.user)
            ]
        )


def _step_up(request, hint: str) -> StepUpRequired:
    channel = stronger_channel(request.user)
    return StepUpRequired(
        hint or _("This time, please confirm with a stronger factor."),
        channel=channel,
    )


class CodesView(CustomerView):
    @extend_schema(
        request=s.RequestCodeSerializer,
        responses={202: s.CodeRequestedSerializer},
        parameters=[IDEMPOTENCY_HEADER],
        tags=["customer: cases"],
        summary="Ask for a code on a channel (none is sent for an authenticator app)",
    )
    @idempotent
    def post(self, request, case_id: int):
        self.limit()
        data = s.RequestCodeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        channel = data.validated_data["channel"]
        with case_still_retryable():
            started = services.start_verification(
                case_id=case_id,
                customer=request.user,
                channel=channel,
                language=get_language(),
                context=self.context(),
            )
        if started.held:
            raise CaseInReview(_("Our staff are reviewing this activation; we will tell you."))
        if started.step_up:
            raise _step_up(request, started.hint)
        if not started.delivered:
            raise DeliveryFailed(
                _("We could not send a code by %(channel)s. Please choose another way.")
                % {"channel": Channel(channel).label},
                channel=channel,
            )
        return Response(
            {
                "channel": started.channel,
                "destination": started.destination,
                "resend_in": seconds_until_resend(user=request.user, channel=channel)
                if channel != Channel.TOTP
                else 0,
            },
            status=status.HTTP_202_ACCEPTED,
        )


WRONG = {
    CheckResult.INVALID: (
        "code_invalid",
        gettext_lazy("That code is not right. Check the newest message and try again."),
    ),
    CheckResult.NO_CODE: (
        "no_code",
        gettext_lazy("There is no code waiting for this activation. Ask for a new one."),
    ),
    CheckResult.EXPIRED: ("code_expired", gettext_lazy("The code expired. Ask for a new one.")),
    CheckResult.BURNED: (
        "code_burned",
        gettext_lazy("That code no longer works after too many wrong tries. Ask for a new one."),
    ),
    CheckResult.THROTTLED: (
        "throttled",
        gettext_lazy("Too many tries in a row. Wait a few seconds, then try again."),
    ),
}


def passkey_binding(session) -> str:
    """The value that ties passkey requests to this app session (43 characters, like the web's)."""
    digest = salted_hmac("api.passkey_binding", str(session.pk), algorithm="sha256").digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")  # 32 bytes: 43 characters


class VerificationView(CustomerView):
    @extend_schema(
        request=s.SubmitCodeSerializer,
        responses={202: s.CaseSerializer},
        parameters=[IDEMPOTENCY_HEADER],
        tags=["customer: cases"],
        summary="Submit the code (or passkey answer); if right, the activation is queued",
    )
    @idempotent
    def post(self, request, case_id: int):
        self.limit()
        data = s.SubmitCodeSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        channel = data.validated_data["channel"]
        with case_still_retryable():
            result = services.verify_and_submit(
                case_id=case_id,
                customer=request.user,
                channel=channel,
                code=data.validated_data["code"],
                submission_id=data.validated_data.get("submission_id"),
                context=self.context(),
                passkey_binding=passkey_binding(request.app_session)
                if channel == Channel.PASSKEY
                else "",
            )
        if result == CheckResult.OK:
            case = _case(request, case_id)
            return Response(case_data(case), status=status.HTTP_202_ACCEPTED)
        if result == CheckResult.STEP_UP:
            raise _step_up(request, _("Thank you, that was right."))
        code, message = WRONG.get(result, WRONG[CheckResult.INVALID])
        error = WrongCode(str(message))
        error.code = code
        raise error


class PasskeyOptionsView(CustomerView):
    @extend_schema(request=None, responses={200: dict}, tags=["customer: cases"])
    def post(self, request, case_id: int):
        """A passkey request for this case, as the platform authenticator takes it."""
        self.limit()
        with case_still_retryable():
            options = services.passkey_options(
                case_id=case_id,
                customer=request.user,
                binding=passkey_binding(request.app_session),
            )
        return Response(options, headers={"Cache-Control": "no-store"})
