from django.db import migrations

from activation.migrations_helpers import roles_creator

VIEW_ALL = [
    "activation.view_activationcase",
    "activation.view_caseevent",
    "activation.view_corerequest",
    "activation.view_creditline",
    "activation.view_overriderequest",
    "activation.view_systemevent",
]
ROLES = {
    "agent": [*VIEW_ALL, "activation.work_case", "activation.request_override"],
    "supervisor": [
        *VIEW_ALL,
        "activation.work_case",
        "activation.request_override",
        "activation.approve_override",
        "activation.bulk_recover",
        "activation.operate_core_switch",
    ],
    "auditor": VIEW_ALL,
}


class Migration(migrations.Migration):
    dependencies = [
        ("activation", "0003_staff_permissions_and_overrides"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(roles_creator(ROLES), migrations.RunPython.noop)]
