"""The back office: Django's admin behind django-otp, so every page needs a verified device."""

from collections.abc import Callable

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.signals import user_logged_in
from django.core.exceptions import PermissionDenied
from django.dispatch import receiver
from django.http import HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django_otp.admin import OTPAdminAuthenticationForm, OTPAdminSite
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_otp_webauthn.models import WebAuthnCredential

from accounts.forms import limit_username_length
from accounts.limits import limit_sign_in_posts
from audit.services import record_system_event
from portal.errors import DomainError
from portal.middleware import client_ip, start_staff_session
from verification import backup_codes, passkeys
from verification.enrolment import open_enrolment
from verification.models import Purpose
from verification.passkey_http import error_response, options_response
from verification.services import CheckResult


class InvalidStaffSignIn(DomainError):
    code = "invalid_login"


# The reset whose enrolment window this session, signed in by password alone, may use.
ENROLMENT_SESSION_KEY = "backoffice_enrolment_reset"


class BackofficeAuthenticationForm(OTPAdminAuthenticationForm):
    """Password plus the code from the staff member's authenticator app, or a backup code.

    Both go in the one code field, so the form picks the device instead of asking the member to
    (django-otp refuses to guess among several kinds of device): a code shaped like a backup
    code is tried on their backup codes, any other on their authenticator app, each only if
    confirmed. Only that one device counts the attempt, so a mistyped backup code never
    throttles the app, nor a wrong app code the backup codes.
    """

    otp_device = forms.CharField(required=False, widget=forms.HiddenInput)
    # The browser's answer to this session's passkey request, put here by static/js/passkey.js.
    passkey = forms.CharField(
        required=False,
        strip=False,
        max_length=passkeys.MAX_RESPONSE_LENGTH,
        widget=forms.HiddenInput(attrs={"data-passkey-field": ""}),
    )
    # django-otp's own label, "OTP Token", has no Chinese translation.
    otp_token = forms.CharField(
        required=False,
        label=_("Verification code"),
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code"}),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        limit_username_length(self)

    def clean_otp(self, user) -> None:
        if user is not None and self.cleaned_data.get("passkey"):
            self._verify_passkey(user)
            return
        if user is not None and not backoffice_factors(user):
            window = open_enrolment(user)
            if window is None:
                raise forms.ValidationError(
                    _("You have no authenticator app. Ask a supervisor to reset it."),
                    code="no_factor",
                )
            # Reset by two supervisors and not yet set up again: the password alone signs the
            # member in, unverified, so the one page they reach is the one that sets up the app.
            user.otp_device = None
            user.backoffice_enrolment = window
            return
        super().clean_otp(user)

    def _verify_passkey(self, user) -> None:
        """The staff member's passkey instead of a code: one request, from this session only."""
        ip = client_ip(self.request) if self.request is not None else None
        checked = passkeys.check_assertion(
            user=user,
            purpose=Purpose.STAFF_SIGN_IN,
            binding=passkeys.session_binding(self.request.session),
            response=self.cleaned_data["passkey"],
        )
        record_system_event(
            kind="staff.passkey_sign_in"
            if checked.result == CheckResult.OK
            else "staff.passkey_sign_in_refused",
            actor=user,
            data={"user_id": user.pk, "passkey": getattr(checked.passkey, "pk", None)}
            if checked.passkey is not None
            else {"user_id": user.pk, "result": str(checked.result), "why": checked.why},
            ip=ip,
        )
        if checked.passkey is None or not user.is_staff:
            raise forms.ValidationError(
                _("Your passkey was not accepted. Try again, or enter the code from your app."),
                code="passkey_refused",
            )
        user.otp_device = checked.passkey

    def _chosen_device(self, user):
        device = super()._chosen_device(user)
        # A device posted by id counts only if it is one meant for the back office: a code
        # texted for a password reset or an activation must never open it.
        if device is not None and (
            not is_backoffice_factor(device) or isinstance(device, WebAuthnCredential)
        ):
            device = None
        if device is None and user is not None:
            device = device_for_token(user, self.cleaned_data.get("otp_token") or "")
        return device

    def _verify_token(self, user, token, device=None):
        if isinstance(device, StaticDevice):
            # Stored as django-otp makes them (``abcd2345``); typed perhaps as ``ABCD-2345``.
            token = backup_codes.normalize_backup_code(token)
        verified = super()._verify_token(user, token, device)
        if isinstance(verified, StaticDevice):
            ip = client_ip(self.request) if self.request is not None else None
            backup_codes.record_backup_code_use(device=verified, ip=ip)
        return verified


# The second factors that open the back office. A passkey answers its own request (the form's
# ``passkey`` field), never a typed code; devices that receive codes by SMS or e-mail never
# open the back office at all.
BACKOFFICE_FACTOR_MODELS = (TOTPDevice, StaticDevice, WebAuthnCredential)


def require_app_session(request) -> None:
    """Refuse a session whose second factor was a backup code for what changes a credential.

    A backup code is for getting back in when the app is out of reach: with the password it must
    not change a password, nor ask for or approve a factor reset (someone holding a stolen
    printout would lock the owner out).
    """
    if isinstance(getattr(request.user, "otp_device", None), StaticDevice):
        raise PermissionDenied(
            _("Signed in with a backup code: sign in with your authenticator app to do this.")
        )


def is_backoffice_factor(device) -> bool:
    return isinstance(device, BACKOFFICE_FACTOR_MODELS) and device.confirmed


def backoffice_factors(user) -> list:
    """The user's confirmed devices that may verify a back-office sign-in."""
    return [
        device
        for model in BACKOFFICE_FACTOR_MODELS
        for device in model.objects.devices_for_user(user, confirmed=True)
    ]


def device_for_token(user, token: str):
    """The one confirmed back-office device ``token`` may belong to, or None.

    A backup code goes to the member's backup codes, locked (``backup_codes.locked_backup_device``)
    so that one code used twice at once opens one session; anything else to their app.
    """
    if backup_codes.looks_like_backup_code(token):
        return backup_codes.locked_backup_device(user)
    app = next(
        (device for device in backoffice_factors(user) if isinstance(device, TOTPDevice)),
        None,
    )
    # No app (none set up yet): the code is wrong for the backup codes, not "pick a device".
    return app or backup_codes.locked_backup_device(user)


@receiver(user_logged_in)
def _start_staff_session_on_second_factor(sender, request, user, **kwargs) -> None:
    # django-otp marks a user verified by the sign-in form with ``otp_device``.
    if request is not None and getattr(user, "otp_device", None) is not None:
        start_staff_session(request)


class ReadOnlyAdminMixin:
    """Nothing of this model is added, edited or deleted through the admin: changes go through
    a service, which checks permissions and writes the audit event."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class BackofficeSite(OTPAdminSite):
    site_header = _("Activation Rescue back office")
    site_title = _("Activation Rescue")
    index_title = _("Stuck activations")
    login_form = BackofficeAuthenticationForm
    login_template = "backoffice/login.html"

    def password_change(self, request, extra_context=None):
        require_app_session(request)
        return super().password_change(request, extra_context)

    def index(self, request, extra_context=None):
        """The landing page is the work queue: cases waiting for staff, most overdue first."""
        return redirect(
            reverse("backoffice:activation_activationcase_changelist", current_app=self.name)
            + "?state__exact=needs_review"
        )

    def login(self, request, extra_context=None):
        if request.method == "GET" and self._enrolling(request):
            return self._to_enrolment_page()
        # The same per-address limit and per-account ceiling as the customers' sign-in page.
        response = limit_sign_in_posts(super().login)(request, extra_context)
        window = getattr(request.user, "backoffice_enrolment", None)
        if window is not None:
            # Set after Django's login() rotated the session, so it belongs to this sign-in.
            request.session[ENROLMENT_SESSION_KEY] = window.pk
            return self._to_enrolment_page()
        return response

    def _to_enrolment_page(self) -> HttpResponse:
        _route, _view, name = self._enrolment_page
        return redirect(f"{self.name}:{name}")

    @staticmethod
    def _enrolling(request) -> bool:
        user = request.user
        return (
            user.is_authenticated
            and not user.is_verified()
            and ENROLMENT_SESSION_KEY in request.session
        )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pages: list[tuple[str, Callable[..., HttpResponse], str]] = []
        self._menu: list[tuple[str, str, Callable[..., bool]]] = []
        self._enrolment_page: tuple[str, Callable[..., HttpResponse], str] | None = None

    def register_page(
        self,
        route: str,
        view: Callable[..., HttpResponse],
        *,
        name: str,
        menu: str | None = None,
        shown_to: Callable[..., bool] | None = None,
    ) -> None:
        """Serve an app's own page under the back office, behind the same sign-in and factor.

        Apps call this from their ``admin.py`` (as they register models), so this site never
        imports their views and their views may import it. A page with a ``menu`` label is
        listed in the sidebar's "Operations" to the staff ``shown_to(user)`` accepts (the view
        still checks for itself).
        """
        self._pages.append((route, view, name))
        if menu is not None:
            self._menu.append((menu, name, shown_to or (lambda user: True)))

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        if app_label is not None:
            return apps
        pages = [
            {
                "name": label,
                "object_name": name.replace("-", "_"),
                "admin_url": reverse(f"{self.name}:{name}", current_app=self.name),
                "add_url": None,
                "view_only": True,
                "perms": {"view": True},
            }
            for label, name, shown_to in self._menu
            if shown_to(request.user)
        ]
        if pages:
            operations = {
                "name": _("Operations"),
                "app_label": "operations",
                "app_url": pages[0]["admin_url"],
                "has_module_perms": True,
                "models": pages,
            }
            apps = [operations, *apps]
        return apps

    def register_enrolment_page(
        self, route: str, view: Callable[..., HttpResponse], *, name: str
    ) -> None:
        """Serve the page where a staff member with no factor sets one up after a reset.

        It is the one page served without the second factor (the member has none yet), so the
        view must itself refuse any session that did not sign in here by password within an
        enrolment window (``ENROLMENT_SESSION_KEY``). The sign-in sends such sessions to it.
        """
        self._enrolment_page = (route, view, name)

    def page(
        self, request, template: str, title: str, *, status: int = 200, **context
    ) -> TemplateResponse:
        """Render an app's own back-office page inside the admin's frame (header, sidebar)."""
        return TemplateResponse(
            request,
            template,
            {**self.each_context(request), "title": title, **context},
            status=status,
        )

    def passkey_options(self, request) -> HttpResponse:
        """The passkey request of a sign-in: the password first, as limited as the form's."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        return limit_sign_in_posts(self._passkey_options)(request)

    @staticmethod
    def _passkey_options(request) -> HttpResponse:
        form = AuthenticationForm(request, data=request.POST)
        limit_username_length(form)
        user = form.get_user() if form.is_valid() else None
        if user is None or not user.is_staff:
            return error_response(
                InvalidStaffSignIn(
                    _("Enter the username and password of a staff account, then try again.")
                )
            )
        return options_response(
            lambda: passkeys.authentication_options(
                user=user,
                purpose=Purpose.STAFF_SIGN_IN,
                binding=passkeys.session_binding(request.session),
            )
        )

    def get_urls(self):
        pages = [path(route, self.admin_view(view), name=name) for route, view, name in self._pages]
        pages.append(
            path(
                "login/passkey-options/",
                csrf_protect(never_cache(self.passkey_options)),
                name="passkey-options",
            )
        )
        if self._enrolment_page is not None:
            route, view, name = self._enrolment_page
            pages.append(path(route, csrf_protect(never_cache(view)), name=name))
        return [*pages, *super().get_urls()]


backoffice = BackofficeSite(name="backoffice")
