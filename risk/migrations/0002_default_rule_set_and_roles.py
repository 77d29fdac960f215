from django.db import migrations
from django.utils import timezone

from activation.migrations_helpers import roles_creator

# The first live rule set. Scores add up; 40 asks for a stronger factor, 90 hands to staff.
# Network facts (a VPN, an address change) add at most 25 together: never enough alone. Tuned on
# the labelled traffic of bench/risk_traffic.py (docs/benchmarks.md, "Risk traffic").
DEFAULT_RULES = [
    ("new_device", {}, 40),
    ("phone_changed_new_device", {"days": 14}, 40),
    ("password_reset_new_device", {"days": 3}, 40),
    # E-mail codes are a channel too: a new address and a new device add up with anything else.
    ("email_changed_new_device", {"days": 14}, 20),
    ("network_listed", {"labels": ["hosting", "proxy", "vpn"]}, 15),
    ("address_changed", {}, 10),
    # A second customer on one device adds a little; with a week-old account, a step-up. Three
    # of a household pass on their shared computer; a fourth is asked for more, a fifth is a ring.
    ("young_account", {"days": 7}, 15),
    ("many_customers", {"key": "device", "more_than": 1}, 25),
    ("many_customers", {"key": "device", "more_than": 3}, 40),
    ("many_customers", {"key": "device", "more_than": 4}, 90),
    ("many_customers", {"key": "prefix", "more_than": 15}, 20),
    # A ring's phone that drops its cookie between accounts: fresh ids of one look on one network.
    # No first step here: first-timers with the same popular phone share a carrier's /24.
    ("many_customers", {"key": "look", "more_than": 3}, 40),
    ("many_customers", {"key": "look", "more_than": 4}, 90),
    ("code_velocity", {"counter": "requested", "key": "device", "more_than": 6}, 30),
    # One customer's own wrong codes are the lock-outs' business (3 codes × 5 tries, then
    # staff); these catch guessing spread over many accounts from one device or network.
    ("code_velocity", {"counter": "failed", "key": "device", "more_than": 15}, 40),
    ("code_velocity", {"counter": "failed", "key": "prefix", "more_than": 30}, 20),
    ("earlier_lockouts", {"at_least": 2, "days": 30}, 20),
    ("fraud_confirmed_before", {}, 90),
    ("bad_device_facts", {}, 10),
]


def create_default_rule_set(apps, schema_editor):
    version_model = apps.get_model("risk", "RuleSetVersion")
    rule_model = apps.get_model("risk", "Rule")
    if version_model.objects.exists():
        return
    now = timezone.now()
    version = version_model.objects.create(
        number=1,
        status="live",
        step_up_at=40,
        review_at=90,
        note="The default rule set shipped with the checkpoint.",
        created_at=now,
        published_at=now,
    )
    rule_model.objects.bulk_create(
        [
            rule_model(version=version, kind=kind, params=params, score=score)
            for kind, params, score in DEFAULT_RULES
        ]
    )


VIEW_ALL = [
    "activation.view_activationcase",
    "activation.view_caseevent",
    "activation.view_corerequest",
    "activation.view_creditline",
    "activation.view_overriderequest",
    "audit.view_systemevent",
    "risk.view_risk",
]
RISK_RULES = ["risk.edit_rules", "risk.publish_rules", "risk.manage_risk_lists"]
ROLES = {
    "agent": [
        *VIEW_ALL,
        "activation.work_case",
        "activation.request_override",
        "risk.record_risk_outcome",
    ],
    "supervisor": [
        *VIEW_ALL,
        "activation.work_case",
        "activation.request_override",
        "activation.approve_override",
        "activation.bulk_recover",
        "activation.operate_core_switch",
        "activation.export_case_history",
        "audit.lift_sign_in_lockout",
        "risk.record_risk_outcome",
        *RISK_RULES,
    ],
    "auditor": [*VIEW_ALL, "activation.export_case_history"],
    "risk_analyst": [*VIEW_ALL, "risk.record_risk_outcome", *RISK_RULES],
}


class Migration(migrations.Migration):
    dependencies = [
        ("risk", "0001_checkpoint"),
        ("audit", "0001_system_trail_from_activation"),
        ("accounts", "0002_contact_change_times"),
    ]

    operations = [
        migrations.RunPython(create_default_rule_set, migrations.RunPython.noop),
        migrations.RunPython(roles_creator(ROLES), migrations.RunPython.noop),
    ]
