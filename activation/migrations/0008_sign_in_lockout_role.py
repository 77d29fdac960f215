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
        "activation.export_case_history",
        "activation.lift_sign_in_lockout",
    ],
    "auditor": [*VIEW_ALL, "activation.export_case_history"],
}


class Migration(migrations.Migration):
    dependencies = [("activation", "0007_bulk_recovery_job")]

    operations = [
        migrations.AlterModelOptions(
            name="systemevent",
            options={
                "ordering": ["seq"],
                "permissions": [("lift_sign_in_lockout", "Can see and lift sign-in lock-outs")],
                "verbose_name": "system event",
                "verbose_name_plural": "system events",
            },
        ),
        migrations.RunPython(roles_creator(ROLES), migrations.RunPython.noop),
    ]
