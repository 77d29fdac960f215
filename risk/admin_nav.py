"""A model in the back office's navigation whose work happens on a page of its own."""

from django.contrib import admin
from django.shortcuts import redirect
from django.urls import path

from accounts.roles import can
from portal.backoffice import ReadOnlyAdminMixin


class PageLinkAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Shows the model to those who may see risk data; its list is ``page`` (a URL name)."""

    page = ""

    def has_view_permission(self, request, obj=None) -> bool:
        return can(request.user, "view_risk")

    def has_module_permission(self, request) -> bool:
        return can(request.user, "view_risk")

    def get_urls(self):
        opts = self.opts
        return [
            path(
                "",
                self.admin_site.admin_view(lambda request: redirect(self.page)),
                name=f"{opts.app_label}_{opts.model_name}_changelist",
            )
        ]
