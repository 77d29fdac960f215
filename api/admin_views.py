"""The back-office page where staff make, see and revoke their own API tokens."""

from django import forms
from django.contrib import messages
from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from portal.backoffice import backoffice, require_app_session
from portal.errors import DomainError
from portal.middleware import client_ip
from verification import factors
from verification.forms import code_field

from .models import StaffToken
from .staff import tokens


class CreateTokenForm(forms.Form):
    name = forms.CharField(
        label=gettext_lazy("Name"),
        max_length=100,
        help_text=gettext_lazy("What the token is for, e.g. the tool that uses it."),
    )
    scopes = forms.MultipleChoiceField(
        label=gettext_lazy("Scopes"),
        choices=StaffToken.Scope.choices,
        widget=forms.CheckboxSelectMultiple,
    )
    days = forms.IntegerField(
        label=gettext_lazy("Valid for (days)"),
        min_value=1,
        max_value=tokens.MAX_DAYS,
        initial=tokens.DEFAULT_DAYS,
    )
    current_code = code_field(gettext_lazy("Code from your authenticator app"))

    def __init__(self, *args, allowed: list[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Only the scopes the member's role allows are offered (the service checks again).
        self.fields["scopes"].choices = [
            (value, label) for value, label in StaffToken.Scope.choices if value in allowed
        ]


def _app_code_holds(staff, code: str) -> bool:
    """The code from the member's authenticator app, typed again; used up once right."""
    return factors.staff_app_code_holds(staff=staff, code=code)


def _scope_labels(token: StaffToken) -> list[str]:
    labels = dict(StaffToken.Scope.choices)
    return [str(labels.get(scope, scope)) for scope in token.scopes]


def _row(token: StaffToken, now) -> dict:
    if token.revoked_at is not None:
        state = _("revoked")
    elif token.expires_at <= now:
        state = _("expired")
    else:
        state = _("active")
    return {
        "token": token,
        "scopes": _scope_labels(token),
        "state": state,
        "live": token.revoked_at is None and token.expires_at > now,
    }


def _token_id(request: HttpRequest) -> int:
    value = request.POST.get("token_id", "")
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise BadRequest("token_id must be a number")
    return int(value)


def api_tokens(request: HttpRequest) -> HttpResponse:
    """Make a token (after a fresh code from the app), see one's tokens, revoke one.

    The new token is in this one answer only (the back office sends no-cache headers): not in
    the session, not behind a redirect, so a reload or the back button cannot show it again.
    """
    staff = request.user
    allowed = tokens.allowed_scopes(staff)
    form = CreateTokenForm(allowed=allowed)
    created = None
    action = request.POST.get("action", "") if request.method == "POST" else ""
    if action == "create":
        # A session signed in with a backup code makes no credential (as for passkeys).
        require_app_session(request)
        form = CreateTokenForm(request.POST, allowed=allowed)
        if form.is_valid():
            if not _app_code_holds(staff, form.cleaned_data["current_code"]):
                form.add_error(
                    "current_code", _("The code from your authenticator app is not right.")
                )
            else:
                try:
                    created = tokens.create_token(
                        staff=staff,
                        name=form.cleaned_data["name"],
                        scopes=form.cleaned_data["scopes"],
                        days=form.cleaned_data["days"],
                        ip=client_ip(request),
                    )
                except DomainError as error:
                    form.add_error(None, error.message)
                else:
                    form = CreateTokenForm(allowed=allowed)
    elif action == "revoke":
        try:
            tokens.revoke_token(token_id=_token_id(request), by=staff, ip=client_ip(request))
        except tokens.TokenNotFound as error:
            messages.error(request, error.message)
        else:
            messages.success(request, _("The token is revoked; it no longer works."))
        return redirect("backoffice:api-tokens")
    token, plaintext = created if created else (None, None)
    now = timezone.now()
    return backoffice.page(
        request,
        "backoffice/api_tokens.html",
        _("API tokens"),
        status=400 if form.is_bound and form.errors else 200,
        form=form,
        new_token=token,
        new_plaintext=plaintext,
        tokens=[_row(token, now) for token in tokens.tokens_for(staff)],
        new_token_scopes=_scope_labels(token) if token else [],
    )
