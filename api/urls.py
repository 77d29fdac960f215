"""``/api/v1/``: the customer API, the staff API and the schema (the core's callback is in
``activation.api``)."""

from django.urls import include, path

app_name = "v1"

urlpatterns = [
    path("", include("api.customer.urls")),
    path("staff/", include("api.staff.urls")),
    path("", include("api.schema_urls")),
]
