from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db import transaction
from django.utils.translation import gettext_lazy as _

from activation.timeline import RequestContext
from portal.backoffice import backoffice, require_app_session

from . import lockouts
from .admin_views import sign_in_lockouts
from .models import User
from .role_changes import record_password_set, record_role_change, role_snapshot
from .roles import holders_of


@admin.register(User, site=backoffice)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "first_name", "last_name", "is_staff", "is_active")
    fieldsets = (
        *BaseUserAdmin.fieldsets,
        (_("Customer"), {"fields": ("phone_number", "customer_reference")}),
    )

    # The admin saves the user (save_model) and then its groups and permissions (save_related),
    # all inside the change view's transaction: read the role before the first, record after the
    # second, so the audit event commits or rolls back with the change itself.
    def save_model(self, request, obj, form, change):
        request._role_before = role_snapshot(obj.pk if change else None)
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        record_role_change(
            user=form.instance,
            before=request._role_before,
            changed_by=request.user,
            ip=RequestContext.from_request(request).ip_address,
        )

    def user_change_password(self, request, id, form_url=""):
        require_app_session(request)
        # The password and its audit event commit together; a redirect means the form saved.
        with transaction.atomic():
            response = super().user_change_password(request, id, form_url)
            if request.method == "POST" and response.status_code == 302:
                record_password_set(
                    user=User.objects.get(pk=id),
                    changed_by=request.user,
                    ip=RequestContext.from_request(request).ip_address,
                )
        return response


backoffice.register_page(
    "sign-in-lockouts/",
    sign_in_lockouts,
    name="sign-in-lockouts",
    menu=_("Sign-in lock-outs"),
    shown_to=holders_of(lockouts.PERMISSION),
)
