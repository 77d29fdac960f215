from django.urls import include, path

from activation import views as activation_views

from . import health
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
