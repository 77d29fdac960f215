"""The system audit trail moves from the activation app to this one.

The table keeps its name, so only Django's idea of whose model it is changes; its content type
(and with it the permissions staff roles hold) moves along; the append-only trigger is installed
under this app's name before the activation app drops the old one (activation 0010).
"""

import django.db.models.deletion
import pgtrigger.compiler
import pgtrigger.migrations
from django.conf import settings
from django.db import migrations, models


def _move_content_type(apps, from_label: str, to_label: str) -> None:
    content_type = apps.get_model("contenttypes", "ContentType")
    permission = apps.get_model("auth", "Permission")
    old = content_type.objects.filter(app_label=from_label, model="systemevent").first()
    if old is None:
        return
    new = content_type.objects.filter(app_label=to_label, model="systemevent").first()
    if new is None:
        old.app_label = to_label
        old.save(update_fields=["app_label"])
        return
    # Both exist (permissions were created for the new label meanwhile): keep the old rows,
    # which roles and grants point at, under the new content type.
    permission.objects.filter(content_type=new).delete()
    permission.objects.filter(content_type=old).update(content_type=new)
    old.delete()


def forwards(apps, schema_editor):
    _move_content_type(apps, "activation", "audit")


def backwards(apps, schema_editor):
    _move_content_type(apps, "audit", "activation")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("contenttypes", "0002_remove_content_type_name"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("activation", "0008_sign_in_lockout_role"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="SystemEvent",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True,
                                primary_key=True,
                                serialize=False,
                                verbose_name="ID",
                            ),
                        ),
                        ("kind", models.CharField(max_length=64)),
                        ("data", models.JSONField(blank=True, default=dict)),
                        ("ip_address", models.GenericIPAddressField(blank=True, null=True)),
                        ("created_at", models.DateTimeField()),
                        ("prev_hash", models.CharField(max_length=64)),
                        ("hash", models.CharField(max_length=64, unique=True)),
                        ("seq", models.PositiveIntegerField(unique=True)),
                        (
                            "actor",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "verbose_name": "system event",
                        "verbose_name_plural": "system events",
                        "db_table": "activation_systemevent",
                        "ordering": ["seq"],
                        "permissions": [
                            ("lift_sign_in_lockout", "Can see and lift sign-in lock-outs")
                        ],
                    },
                ),
            ],
        ),
        migrations.RunPython(forwards, backwards),
        pgtrigger.migrations.AddTrigger(
            model_name="systemevent",
            trigger=pgtrigger.compiler.Trigger(
                name="append_only",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    func="RAISE EXCEPTION 'pgtrigger: Cannot update or delete rows from % table', "
                    "TG_TABLE_NAME;",
                    hash="44fef6b73a927aef9223fda13c78b67714651ff4",
                    operation="UPDATE OR DELETE",
                    pgid="pgtrigger_append_only_6fbaa",
                    table="activation_systemevent",
                    when="BEFORE",
                ),
            ),
        ),
    ]
