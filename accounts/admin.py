from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.utils.translation import gettext_lazy as _

from portal.backoffice import backoffice

from .models import User


@admin.register(User, site=backoffice)
class UserAdmin(BaseUserAdmin):
    list_display = ("username", "first_name", "last_name", "is_staff", "is_active")
    fieldsets = (
        *BaseUserAdmin.fieldsets,
        (_("Customer"), {"fields": ("phone_number", "customer_reference")}),
    )
