from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The REST API for the mobile app and staff tools (``/api/v1/``), described by OpenAPI."""

    name = "api"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the schema's authentication extensions with drf-spectacular.
        from . import schema  # noqa: F401
