from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = _("Accounts")

    def ready(self) -> None:
        # Register the tasks in every process (web too), so services can queue them by name, and
        # the receiver that remembers which browsers signed in to each account (accounts.limits).
        from . import limits, tasks  # noqa: F401
