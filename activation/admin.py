"""The back office: the work queue of stuck cases, the case page, and staff actions on it."""

import json
from datetime import timedelta

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import F
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from accounts.masking import mask_name, mask_phone_number
from accounts.roles import can, holders_of
from portal.backoffice import ReadOnlyAdminMixin, backoffice
from risk.admin_cases import case_risk_context

from . import selectors
from .admin_views import (
    bulk_recovery,
    bulk_recovery_job,
    case_action,
    case_exports,
    case_page_context,
    case_pk,
    core_switch,
    dashboard,
    export_manifest,
)
from .integrity import last_verification
from .models import (
    CORE_REQUEST_FIELDS,
    ActivationCase,
    CaseEvent,
    CaseState,
    CoreRequest,
    CreditLine,
    OverrideRequest,
)
from .pii import event_record, may_see_pii


def _without_pii(fields) -> list:
    """``fields`` with the customer's username masked, for staff without view_pii."""
    return ["masked_customer" if name == "customer" else name for name in fields]


class ReadOnlyInline(ReadOnlyAdminMixin, admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = False


def timeline_entry(event: CaseEvent, *, pii: bool) -> dict:
    """One row of the case page's timeline (``event_record``), as the admin shows its fields."""
    record = event_record(event, pii=pii)
    return {
        **record,
        "actor_type": event.get_actor_type_display(),
        # As the admin shows a JSONField.
        "data": json.dumps(record["data"], ensure_ascii=False) if event.data else None,
    }


def _page_number(value: str | None) -> int:
    """A page number from the query string; anything else is the first page."""
    return int(value) if value and value.isascii() and value.isdigit() and len(value) < 7 else 1


class CoreRequestInline(ReadOnlyInline):
    model = CoreRequest
    verbose_name_plural = _("Core requests")
    fields = readonly_fields = CORE_REQUEST_FIELDS
    ordering = ("-created_at", "-pk")


class CappedCountPaginator(Paginator):
    """Counts no further than ``selectors.QUEUE_COUNT_CAP`` rows: a count of a million cases
    would cost more than the page. ``more`` says there are more than ``count``; the pages
    beyond the cap are reached by filtering or by ordering the other way."""

    more = False
    number = 1  # the page shown

    @cached_property
    def count(self) -> int:
        counted = selectors.count_up_to(self.object_list, selectors.QUEUE_COUNT_CAP)
        self.more = counted > selectors.QUEUE_COUNT_CAP
        return min(counted, selectors.QUEUE_COUNT_CAP)

    def page(self, number):
        page = super().page(number)
        self.number = page.number
        return page

    @property
    def page_links(self):
        """The page numbers to link to around the page shown (a template cannot pass it)."""
        return self.get_elided_page_range(self.number)


class AgeFilter(admin.SimpleListFilter):
    title = _("age")
    parameter_name = "age"
    BUCKETS = {
        "15m": (_("under 15 minutes"), timedelta(minutes=15)),
        "1h": (_("under 1 hour"), timedelta(hours=1)),
        "24h": (_("under 24 hours"), timedelta(hours=24)),
    }

    def lookups(self, request, model_admin):
        return [(key, label) for key, (label, _span) in self.BUCKETS.items()] + [
            ("older", _("older"))
        ]

    def queryset(self, request, queryset):
        if self.value() in self.BUCKETS:
            return queryset.filter(opened_at__gte=timezone.now() - self.BUCKETS[self.value()][1])
        if self.value() == "older":
            return queryset.filter(opened_at__lt=timezone.now() - timedelta(hours=24))
        return queryset


class SlaBreachedFilter(admin.SimpleListFilter):
    title = _("SLA")
    parameter_name = "sla"

    def lookups(self, request, model_admin):
        return [("breached", _("breached")), ("within", _("within"))]

    def queryset(self, request, queryset):
        if self.value() == "breached":
            return queryset.filter(sla_due_at__lt=timezone.now())
        if self.value() == "within":
            return queryset.exclude(sla_due_at__lt=timezone.now())
        return queryset


class AssigneeFilter(admin.SimpleListFilter):
    title = _("assignee")
    parameter_name = "assignee"

    def lookups(self, request, model_admin):
        return [("mine", _("mine")), ("none", _("unassigned"))]

    def queryset(self, request, queryset):
        if self.value() == "mine":
            return queryset.filter(assignee=request.user)
        if self.value() == "none":
            return queryset.filter(assignee__isnull=True)
        return queryset


@admin.register(ActivationCase, site=backoffice)
class ActivationCaseAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    change_list_template = "backoffice/case_queue.html"
    change_form_template = "backoffice/case_page.html"
    list_display = (
        "id",
        "reference",
        "customer_phone",
        "state",
        "failure_reason",
        "risk_level",
        "assignee",
        "opened_at",
        "sla_due_at",
    )
    list_display_links = ("id", "reference")
    list_filter = (
        "state",
        "failure_reason",
        AgeFilter,
        SlaBreachedFilter,
        "risk_level",
        AssigneeFilter,
    )
    list_select_related = ("credit_line__customer", "assignee")
    search_fields = ("credit_line__reference",)  # widened in get_search_results
    search_help_text = _("Case id, credit-line reference, phone number or its last 4 digits")
    list_per_page = 50
    paginator = CappedCountPaginator
    # "12 results (1,000,000 total)" would count the whole table on every filtered page.
    show_full_result_count = False
    # The timeline is the case page's own paged table (``change_view``), not an inline: an
    # inline shows every event of a case.
    inlines = (CoreRequestInline,)
    fieldsets = (
        (_("Customer and credit line"), {"fields": ("customer", "credit_line", "customer_phone")}),
        (
            _("Case"),
            {
                "fields": (
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
            },
        ),
    )
    readonly_fields = (
        "customer",
        "masked_customer",
        "credit_line",
        "customer_phone",
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

    def get_fieldsets(self, request, obj=None):
        if may_see_pii(request.user):
            return self.fieldsets
        return [
            (title, {**options, "fields": _without_pii(options["fields"])})
            for title, options in self.fieldsets
        ]

    def get_ordering(self, request):
        # Furthest past its SLA first; cases that never reached the core (no SLA) after them.
        return (F("sla_due_at").asc(nulls_last=True), "opened_at")

    @admin.display(description=_("reference"), ordering="credit_line__reference")
    def reference(self, case: ActivationCase) -> str:
        return case.credit_line.reference

    @admin.display(description=_("customer"))
    def customer(self, case: ActivationCase) -> str:
        return case.credit_line.customer.get_username()

    @admin.display(description=_("customer"))
    def masked_customer(self, case: ActivationCase) -> str:
        return mask_name(case.credit_line.customer.get_username())

    @admin.display(description=_("phone"))
    def customer_phone(self, case: ActivationCase) -> str:
        phone = case.credit_line.customer.phone_number
        return mask_phone_number(str(phone)) if phone else "—"

    def get_search_results(self, request, queryset, search_term):
        return selectors.search_cases(queryset, search_term), False

    def has_view_permission(self, request, obj=None) -> bool:
        return can(request.user, "view_activationcase")

    def has_module_permission(self, request) -> bool:
        return can(request.user, "view_activationcase")

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            # (code, label, count, more): the link filters by code, people read the label.
            "state_counts": [
                (row.state, CaseState(row.state).label, row.count, row.more)
                for row in selectors.queue_state_counts()
            ],
            "last_verification": last_verification(),
        }
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            **case_page_context(request, object_id),
            **case_risk_context(request, object_id),
            **self._timeline_context(request, object_id),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @staticmethod
    def _timeline_context(request, object_id: str) -> dict:
        """One page of the timeline (``?timeline=2`` for the next older), masked as the viewer
        must see it, for those who may view events (as the inline it replaces asked)."""
        pk = case_pk(object_id)  # None: the admin itself answers that there is no such case
        if pk is None or not request.user.has_perm("activation.view_caseevent"):
            return {}
        page = selectors.case_timeline_page(pk, page=_page_number(request.GET.get("timeline")))
        pii = may_see_pii(request.user)
        return {
            "timeline": page,
            "timeline_entries": [timeline_entry(event, pii=pii) for event in page.events],
        }

    def get_formset_kwargs(self, request, obj, inline, prefix):
        kwargs = super().get_formset_kwargs(request, obj, inline, prefix)
        if isinstance(inline, CoreRequestInline) and obj is not None:
            # A case retried for days has hundreds; the newest tell what is going on.
            kwargs["queryset"] = kwargs["queryset"].filter(selectors.latest_core_requests(obj.pk))
        return kwargs

    def get_urls(self):
        return [
            path(
                "<int:case_id>/act/<str:action>/",
                self.admin_site.admin_view(case_action),
                name="activation_activationcase_act",
            ),
            *super().get_urls(),
        ]


@admin.register(CreditLine, site=backoffice)
class CreditLineAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("reference", "product_name", "customer", "status", "core_version")
    list_filter = ("status",)
    search_fields = ("reference",)
    list_select_related = ("customer",)

    def get_list_display(self, request):
        if may_see_pii(request.user):
            return self.list_display
        return _without_pii(self.list_display)

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        return fields if may_see_pii(request.user) else _without_pii(fields)

    @admin.display(description=CreditLine._meta.get_field("customer").verbose_name)
    def masked_customer(self, line: CreditLine) -> str:
        return mask_name(line.customer.get_username())


@admin.register(OverrideRequest, site=backoffice)
class OverrideRequestAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "case_link",
        "kind",
        "status",
        "requested_by",
        "requested_at",
        "decided_by",
    )
    list_filter = ("status", "kind")
    list_select_related = ("case", "requested_by", "decided_by")
    ordering = ("-requested_at",)

    @admin.display(description=_("case"))
    def case_link(self, override: OverrideRequest) -> str:
        url = reverse("backoffice:activation_activationcase_change", args=[override.case_id])
        return format_html('<a href="{}">#{}</a>', url, override.case_id)


backoffice.register_page(
    "dashboard/",
    dashboard,
    name="dashboard",
    menu=_("Dashboard"),
    shown_to=holders_of("view_activationcase"),
)
backoffice.register_page(
    "exports/",
    case_exports,
    name="exports",
    menu=_("Exports"),
    shown_to=holders_of("export_case_history"),
)
backoffice.register_page(
    "exports/<int:export_id>/manifest.json", export_manifest, name="export-manifest"
)
backoffice.register_page(
    "core-submissions/",
    core_switch,
    name="core-switch",
    menu=_("Core submissions"),
    shown_to=holders_of("operate_core_switch"),
)
backoffice.register_page(
    "bulk-recovery/",
    bulk_recovery,
    name="bulk-recovery",
    menu=_("Bulk recovery"),
    shown_to=holders_of("bulk_recover"),
)
backoffice.register_page("bulk-recovery/<int:job_id>/", bulk_recovery_job, name="bulk-recovery-job")
