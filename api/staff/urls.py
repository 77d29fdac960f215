"""``/api/v1/staff/``: the staff API (staff tokens only)."""

from django.urls import path

from . import views

urlpatterns = [
    path("cases/", views.CaseQueueView.as_view(), name="staff-cases"),
    path("cases/<str:id>/", views.CaseDetailView.as_view(), name="staff-case"),
    path(
        "cases/<str:id>/actions/<str:action>/",
        views.CaseActionView.as_view(),
        name="staff-case-action",
    ),
    path("exports/", views.ExportStartView.as_view(), name="staff-exports"),
    path(
        "exports/<str:id>/download",
        views.ExportDownloadView.as_view(),
        name="staff-export-download",
    ),
    path(
        "exports/<str:id>/manifest/",
        views.ExportManifestView.as_view(),
        name="staff-export-manifest",
    ),
]
