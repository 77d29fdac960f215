"""The OpenAPI document and its readers, served from our own static files (no CDN)."""

from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_update
from django.urls import path
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

# ReDoc always shows Redocly's logo from cdn.redoc.ly; img-src keeps it from loading (the
# browser reports that one blocked image, and nothing leaves our host).
# Both readers are scripts of ours (drf-spectacular-sidecar) that set style attributes and
# <style> elements as they draw, and Swagger UI draws its icons as data: images. Scripts stay
# 'self' only: these pages run no code but the readers' files. Nothing else is relaxed.
READER_POLICY = {"style-src": [UNSAFE_INLINE], "img-src": ["data:"]}
# ReDoc builds its search index in a worker it makes from a blob of its own script.
REDOC_POLICY = {**READER_POLICY, "worker-src": [SELF, "blob:"]}

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "docs/",
        csp_update(READER_POLICY)(SpectacularSwaggerSplitView.as_view(url_name="v1:schema")),
        name="docs",
    ),
    path(
        "redoc/",
        csp_update(REDOC_POLICY)(
            SpectacularRedocView.as_view(url_name="v1:schema", template_name="api/redoc.html")
        ),
        name="redoc",
    ),
]
