"""The back office's view of cases: a queue with a state filter and a read-only timeline."""

from django.contrib import admin
from django.utils.translation import gettext_lazy as _

from portal.backoffice import backoffice

from .models import ActivationCase, CaseEvent, CoreRequest, CreditLine


class ReadOnlyMixin:
    """Nothing here is edited through the admin: every change goes through a service."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyInline(ReadOnlyMixin, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False


class CaseEventInline(ReadOnlyInline):
    model = CaseEvent
    verbose_name_plural = _("Timeline")
    fields = readonly_fields = (
        "seq",
        "created_at",
        "actor_type",
        "actor",
        "kind",
        "state_before",
        "state_after",
        "data",
        "ip_address",
        "device_id",
    )
    ordering = ("seq",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")


class CoreRequestInline(ReadOnlyInline):
    model = CoreRequest
    verbose_name_plural = _("Core requests")
    fields = readonly_fields = (
        "idempotency_key",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
        "completed_at",
    )


@admin.register(ActivationCase, site=backoffice)
class ActivationCaseAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "credit_line",
        "state",
        "failure_reason",
        "risk_level",
        "assignee",
        "state_changed_at",
        "sla_due_at",
    )
    list_filter = ("state", "failure_reason", "risk_level")
    list_select_related = ("credit_line", "assignee")
    search_fields = ("=id", "credit_line__reference")
    ordering = ("sla_due_at", "state_changed_at")
    inlines = (CaseEventInline, CoreRequestInline)
    readonly_fields = (
        "credit_line",
        "state",
        "failure_reason",
        "failure_detail",
        "risk_level",
        "assignee",
        "retry_count",
        "opened_at",
        "state_changed_at",
        "sla_due_at",
        "closed_at",
    )


@admin.register(CreditLine, site=backoffice)
class CreditLineAdmin(ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("reference", "product_name", "customer", "status", "core_version")
    list_filter = ("status",)
    search_fields = ("reference",)
    list_select_related = ("customer",)
