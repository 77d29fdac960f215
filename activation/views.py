"""Customer pages: thin views over selectors and services."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods

from accounts.masking import mask_phone_number
from verification.services import CheckResult, NoPhoneNumber, ResendTooSoon, sms_device_for

from . import selectors, services
from .forms import VerifyCodeForm
from .models import CaseState
from .reasons import EXPLANATIONS, explain
from .timeline import RequestContext
from .transitions import TransitionNotAllowed

IN_PROGRESS_STATES = frozenset({CaseState.SUBMITTING, CaseState.AWAITING_CONFIRMATION})
RETRYABLE_STATES = frozenset({CaseState.FAILED, CaseState.PENDING_VERIFICATION})

CHECK_MESSAGES = {
    CheckResult.INVALID: gettext_lazy(
        "That code is not right. Check the newest SMS and try again."
    ),
    CheckResult.NO_CODE: gettext_lazy(
        "There is no code waiting for this activation. Ask for a new one."
    ),
    CheckResult.THROTTLED: gettext_lazy(
        "Too many tries in a row. Wait a few seconds, then try again."
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


@login_required
def case_detail(request: HttpRequest, case_id: int) -> HttpResponse:
    case = selectors.case_for_customer(request.user, case_id)
    in_progress = case.state in IN_PROGRESS_STATES
    return render(
        request,
        "activation/detail.html",
        {
            "case": case,
            "line": case.credit_line,
            "explanation": explain(case.failure_reason),
            "in_progress": in_progress,
            "can_retry": case.state in RETRYABLE_STATES,
            "refresh_seconds": settings.ACTIVATION_PROGRESS_REFRESH_SECONDS,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def retry(request: HttpRequest, case_id: int) -> HttpResponse:
    case = selectors.case_for_customer(request.user, case_id)
    if case.state not in RETRYABLE_STATES:
        return redirect("activation:detail", case_id=case.pk)
    context = RequestContext.from_request(request)
    form = VerifyCodeForm()

    if request.method == "POST" and request.POST.get("action") == "send":
        try:
            services.send_activation_code(case_id=case.pk, customer=request.user, context=context)
        except ResendTooSoon as error:
            messages.error(request, error.message)
        except NoPhoneNumber as error:
            messages.error(request, error.message)
        except TransitionNotAllowed:
            return redirect("activation:detail", case_id=case.pk)
        else:
            messages.success(request, _("We sent you a code by SMS."))
        return redirect("activation:retry", case_id=case.pk)

    if request.method == "POST":
        form = VerifyCodeForm(request.POST)
        if form.is_valid():
            try:
                result = services.verify_and_submit(
                    case_id=case.pk,
                    customer=request.user,
                    code=form.cleaned_data["code"],
                    context=context,
                )
            except TransitionNotAllowed:
                return redirect("activation:detail", case_id=case.pk)
            if result in (CheckResult.OK, CheckResult.EXPIRED, CheckResult.BURNED):
                return redirect("activation:detail", case_id=case.pk)
            form.add_error("code", CHECK_MESSAGES[result])

    case.refresh_from_db()
    code_sent = False
    destination = ""
    if request.user.phone_number:
        device = sms_device_for(request.user)
        code_sent = case.state == CaseState.PENDING_VERIFICATION and device.has_live_code()
        destination = mask_phone_number(str(device.phone_number))
    return render(
        request,
        "activation/retry.html",
        {
            "case": case,
            "line": case.credit_line,
            "form": form,
            "code_sent": code_sent,
            "destination": destination,
            "explanation": explain(case.failure_reason),
        },
    )
