from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.utils.translation import gettext as _
from django.views.defaults import page_not_found
from django.views.defaults import server_error as default_server_error

from activation import views as activation_views

from . import health, outages
from .backoffice import backoffice

urlpatterns = [
    path("", activation_views.home, name="home"),
    path("help/", activation_views.help_page, name="help"),
    path("accounts/", include("accounts.urls")),
    path("activation/", include("activation.urls")),
    path("api/v1/", include("activation.api.urls")),
    path("api/v1/", include("api.urls")),
    path("backoffice/", backoffice.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
]


def not_found(request, exception=None):
    """A 404 under /api/ in the API's error envelope; the site's page everywhere else."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"code": "not_found", "message": _("Not found."), "details": {}}, status=404
        )
    return page_not_found(request, exception)


handler404 = not_found


def server_error(request: HttpRequest) -> HttpResponse:
    """A database, PgBouncer or cache that does not answer is a 503 to try again (see
    portal.outages); anything else a 500, in the API's envelope under /api/."""
    if outages.during_an_outage():
        return outages.unavailable(request)
    if request.path.startswith("/api/"):
        message = _("Something went wrong on our side. Nothing you sent was lost.")
        return JsonResponse({"code": "server_error", "message": message, "details": {}}, status=500)
    return default_server_error(request)


handler500 = server_error
