from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class RiskConfig(AppConfig):
    name = "risk"
    verbose_name = _("Risk checkpoint")

    def ready(self) -> None:
        # Register the tasks in every process, so beat and services can queue them by name.
        from . import tasks  # noqa: F401
