"""Code that data migrations share. Each migration passes its own frozen copy of the roles."""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions


def roles_creator(role_permissions: dict[str, list[str]]):
    """A RunPython function giving each role's group exactly ``role_permissions[role]``."""

    def create_roles(apps, schema_editor):
        # Permissions are normally created after all migrations; the roles need them now.
        for app_config in global_apps.get_app_configs():
            models_module = app_config.models_module
            app_config.models_module = models_module or True  # create_permissions skips None
            try:
                create_permissions(app_config, apps=apps, verbosity=0)
            finally:
                app_config.models_module = models_module
        from accounts.roles import sync_roles

        sync_roles(
            apps.get_model("auth", "Group"),
            apps.get_model("auth", "Permission"),
            role_permissions,
        )

    return create_roles
