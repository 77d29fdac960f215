"""Code that data migrations share. Each migration passes its own frozen copy of the roles."""

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.contrib.postgres import operations as postgres_operations
from django.db.migrations.operations import AddIndex


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


class AddIndexConcurrently(postgres_operations.AddIndexConcurrently):
    """``CREATE INDEX CONCURRENTLY`` on PostgreSQL, so building an index on a busy table does
    not hold up writes to it; a plain ``AddIndex`` elsewhere (the quick test path on SQLite).
    The migration must say ``atomic = False``."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_forwards(self, app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            AddIndex.database_backwards(self, app_label, schema_editor, from_state, to_state)
