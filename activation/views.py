"""Customer pages: thin views over selectors and services."""

import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.translation import get_language, gettext_lazy
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal.ratelimits import limit_retry_posts
from verification import passkeys
from verification.models import Channel
from verification.passkey_http import options_response
from verification.services import (
    ChannelUnavailable,
    CheckResult,
    ResendTooSoon,
    TooManyCodes,
    channel_options,
    has_live_code,
    seconds_until_resend,
)

from . import selectors, services
from .forms import ChooseChannelForm, PasskeyAnswerForm, VerifyCodeForm
from .models import ActivationCase, CaseState
from .reasons import EXPLANATIONS, explain
from .services.checkpoint import stronger_channel
from .timeline import RequestContext
from .transitions import TransitionNotAllowed

IN_PROGRESS_STATES = frozenset({CaseState.SUBMITTING, CaseState.AWAITING_CONFIRMATION})
RETRYABLE_STATES = frozenset({CaseState.FAILED, CaseState.PENDING_VERIFICATION})

CHECK_MESSAGES = {
    CheckResult.INVALID: gettext_lazy(
        "That code is not right. Check the newest message and try again."
    ),
    CheckResult.NO_CODE: gettext_lazy(
        "There is no code waiting for this activation. Ask for a new one."
    ),
    CheckResult.THROTTLED: gettext_lazy(
        "Too many tries in a row. Wait a few seconds, then try again."
    ),
}

PASSKEY_MESSAGES = {
    CheckResult.INVALID: gettext_lazy(
        "Your passkey's answer was not accepted. Try again, or choose another way."
    ),
    CheckResult.NO_CODE: gettext_lazy(
        "That passkey request has ended (it was used, or asked for elsewhere). Try again."
    ),
    CheckResult.EXPIRED: gettext_lazy("The passkey request timed out. Please try again."),
    CheckResult.THROTTLED: CHECK_MESSAGES[CheckResult.THROTTLED],
    CheckResult.BURNED: gettext_lazy(
        "Too many passkey answers were refused. Start again, or choose another way."
    ),
}


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("activation:list")
    return render(request, "home.html")


def help_page(request: HttpRequest) -> HttpResponse:
    return render(request, "help.html", {"explanations": EXPLANATIONS.values()})


@login_required
def case_list(request: HttpRequest) -> HttpResponse:
    lines = selectors.credit_lines_for_customer(request.user)
    return render(request, "activation/list.html", {"lines": lines})


def _status_context(case: ActivationCase) -> dict:
    """What the status panel shows, from a case read by ``selectors.case_status_for_customer``."""
    return {
        "offer_passkey": case.state == CaseState.ACTIVATED and not case.customer_has_passkey,
        "case": case,
        "line": case.credit_line,
        "explanation": explain(case.failure_reason),
        "in_progress": case.state in IN_PROGRESS_STATES,
        "queued_while_paused": case.state == CaseState.SUBMITTING and case.core_paused,
        "refresh_seconds": settings.ACTIVATION_PROGRESS_REFRESH_SECONDS,
    }


@login_required
def case_detail(request: HttpRequest, case_id: int) -> HttpResponse:
    case = selectors.case_status_for_customer(request.user, case_id)
    return render(request, "activation/detail.html", _status_context(case))


@login_required
@require_GET
def case_status(request: HttpRequest, case_id: int) -> JsonResponse:
    """The case's state and its status panel, for pages that update in place."""
    case = selectors.case_status_for_customer(request.user, case_id)
    context = _status_context(case)
    html = render_to_string("activation/_status_panel.html", context, request=request)
    return JsonResponse(
        {"state": case.state, "in_progress": context["in_progress"], "html": html},
        headers={"Cache-Control": "no-store"},
    )


def _session_key(case_id: int) -> str:
    return f"verification_channel:{case_id}"


def _current_channel(request: HttpRequest, case: ActivationCase, options) -> str | None:
    """The channel whose code the customer is expected to enter now, if any."""
    if case.state != CaseState.PENDING_VERIFICATION:
        return None
    available = {option.channel for option in options}
    remembered = request.session.get(_session_key(case.pk))
    candidates = [remembered] if remembered in available else []
    candidates += [option.channel for option in options if option.sends_code]
    for channel in candidates:
        if has_live_code(user=request.user, channel=channel):
            return channel
    return None


def _suggested_channel(case: ActivationCase, options) -> str | None:
    """The first channel that sends codes, passing over one that just failed to deliver."""
    failed = case.failure_detail if case.failure_reason == "delivery_failed" else ""
    sending = [option.channel for option in options if option.sends_code]
    preferred = [channel for channel in sending if channel != failed]
    return (preferred or sending or [None])[0]


def _send(request: HttpRequest, case: ActivationCase, channel: str) -> HttpResponse:
    try:
        started = services.start_verification(
            case_id=case.pk,
            customer=request.user,
            channel=channel,
            language=get_language(),
            context=RequestContext.from_request(request),
        )
    except (ResendTooSoon, TooManyCodes, ChannelUnavailable) as error:
        messages.error(request, error.message)
    except TransitionNotAllowed:
        return redirect("activation:detail", case_id=case.pk)
    else:
        if started.held:
            return redirect("activation:detail", case_id=case.pk)
        if started.step_up:
            stronger = stronger_channel(request.user)
            request.session[_session_key(case.pk)] = stronger
            messages.warning(request, _step_up_message(started.hint, stronger))
        elif not started.delivered:
            messages.error(
                request,
                _("We could not send a code by %(channel)s. Please choose another way.")
                % {"channel": Channel(channel).label},
            )
        else:
            request.session[_session_key(case.pk)] = channel
            if channel != Channel.TOTP:
                messages.success(request, _("We sent you a code."))
    return redirect("activation:retry", case_id=case.pk)


def _step_up_message(hint: str, channel: str) -> str:
    if channel == Channel.PASSKEY:
        return _("%(hint)s This time, please confirm with your passkey.") % {"hint": hint}
    return _("%(hint)s This time, please also use the code from your authenticator app.") % {
        "hint": hint
    }


def _verify(request: HttpRequest, case_id: int, channel: str, form: VerifyCodeForm):
    """Check the code and queue the activation; None means: show the form with its error."""
    try:
        result = services.verify_and_submit(
            case_id=case_id,
            customer=request.user,
            channel=channel,
            code=form.cleaned_data["code"],
            submission_id=form.cleaned_data["submission_id"],
            context=RequestContext.from_request(request),
            passkey_binding=passkeys.session_binding(request.session)
            if channel == Channel.PASSKEY
            else "",
        )
    except services.CaseNotFound as error:
        raise Http404 from error
    except TransitionNotAllowed:
        return redirect("activation:detail", case_id=case_id)
    if result == CheckResult.OK:
        return redirect("activation:detail", case_id=case_id)
    if result == CheckResult.STEP_UP:
        stronger = stronger_channel(request.user)
        request.session[_session_key(case_id)] = stronger
        messages.warning(request, _step_up_message(_("Thank you, that was right."), stronger))
        return redirect("activation:retry", case_id=case_id)
    if channel == Channel.PASSKEY:
        messages.error(request, PASSKEY_MESSAGES[result])
        return redirect("activation:retry", case_id=case_id)
    if result in (CheckResult.EXPIRED, CheckResult.BURNED):
        if result == CheckResult.BURNED:
            messages.error(
                request,
                _("That code no longer works after too many wrong tries. Ask for a new one."),
            )
        return redirect("activation:retry", case_id=case_id)
    form.add_error("code", CHECK_MESSAGES[result])
    return None


@login_required
@require_http_methods(["GET", "POST"])
@limit_retry_posts
def retry(request: HttpRequest, case_id: int) -> HttpResponse:
    action = request.POST.get("action")
    if action == "verify_passkey":
        return _verify_passkey(request, case_id)
    verify_form = VerifyCodeForm(request.POST) if action == "verify" else VerifyCodeForm()
    # The hot path of a surge: the code goes straight to the service, which locks the case and
    # checks its state; the page is built only to show an error.
    remembered = request.session.get(_session_key(case_id))
    if action == "verify" and remembered and verify_form.is_valid():
        response = _verify(request, case_id, remembered, verify_form)
        if response is not None:
            return response

    case = selectors.case_for_customer(request.user, case_id)
    if case.state not in RETRYABLE_STATES:
        return redirect("activation:detail", case_id=case.pk)
    if action == "verify" and not remembered:
        # The session forgot which channel the code was asked for: work it out again.
        channel = _current_channel(request, case, channel_options(request.user))
        if channel is None:
            messages.error(request, CHECK_MESSAGES[CheckResult.NO_CODE])
        elif verify_form.is_valid():
            response = _verify(request, case_id, channel, verify_form)
            if response is not None:
                return response
            case.refresh_from_db()

    options = channel_options(request.user)
    choose_form = ChooseChannelForm(
        options=options, initial={"channel": _suggested_channel(case, options)}
    )
    if action in ("send", "resend"):
        choose_form = ChooseChannelForm(request.POST, options=options)
        if choose_form.is_valid():
            return _send(request, case, choose_form.cleaned_data["channel"])
    elif action == "use_app":
        return _send(request, case, Channel.TOTP)
    elif action == "use_passkey":
        return _send(request, case, Channel.PASSKEY)

    channel = None if request.GET.get("choose") else _current_channel(request, case, options)
    option = next((o for o in options if o.channel == channel), None)
    return render(
        request,
        "activation/retry.html",
        {
            "case": case,
            "line": case.credit_line,
            "options": options,
            "can_use_app": any(o.channel == Channel.TOTP for o in options),
            "can_use_passkey": any(o.channel == Channel.PASSKEY for o in options),
            "choose_form": choose_form,
            "form": verify_form,
            "channel": option,
            "submission_id": uuid.uuid4(),
            "resend_in": seconds_until_resend(user=request.user, channel=channel)
            if channel and channel != Channel.TOTP
            else 0,
            "explanation": explain(case.failure_reason) if case.state == CaseState.FAILED else None,
        },
    )


def _verify_passkey(request: HttpRequest, case_id: int) -> HttpResponse:
    """The passkey's answer, posted by the page's script; any problem is told on the page."""
    form = PasskeyAnswerForm(request.POST)
    if not form.is_valid():
        messages.error(
            request, " ".join(form.errors.get("code", [])) or PASSKEY_MESSAGES[CheckResult.INVALID]
        )
        return redirect("activation:retry", case_id=case_id)
    return _verify(request, case_id, Channel.PASSKEY, form)


@login_required
@require_POST
@limit_retry_posts
def passkey_options(request: HttpRequest, case_id: int) -> HttpResponse:
    """What the retry page's script hands the browser to ask for the customer's passkey."""
    # Read first: ``options_response`` turns every domain error into the error envelope, and a
    # case that moved on (verified in another tab, with staff) sends the script to it instead.
    case = selectors.case_for_customer(request.user, case_id)
    if case.state != CaseState.PENDING_VERIFICATION:
        return JsonResponse(
            {"redirect": reverse("activation:detail", args=[case.pk])},
            headers={"Cache-Control": "no-store"},
        )
    return options_response(
        lambda: services.passkey_options(
            case_id=case.pk,
            customer=request.user,
            binding=passkeys.session_binding(request.session),
        )
    )
