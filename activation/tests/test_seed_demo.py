from django.core.management import call_command
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from activation.models import ActivationCase
from audit.models import SystemEvent


def test_seed_demo_creates_staff_through_create_staff_user_with_their_audit_events(db):
    call_command("seed_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115

    created = SystemEvent.objects.filter(kind="staff.created")
    assert sorted(event.data["role"] for event in created) == [
        "agent",
        "auditor",
        "risk_analyst",
        "supervisor",
    ]
    for username, role in [
        ("agent", "agent"),
        ("supervisor", "supervisor"),
        ("auditor", "auditor"),
        ("risk", "risk_analyst"),
    ]:
        staff = User.objects.get(username=username)
        assert staff.is_staff and not staff.is_superuser
        assert list(staff.groups.values_list("name", flat=True)) == [role]
        assert TOTPDevice.objects.filter(user=staff, confirmed=True).count() == 1
    assert ActivationCase.objects.count() == 3


def test_seed_demo_run_twice_adds_nothing(db):
    call_command("seed_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115
    users, events = User.objects.count(), SystemEvent.objects.count()

    call_command("seed_demo", stdout=open("/dev/null", "w"))  # noqa: SIM115

    assert (User.objects.count(), SystemEvent.objects.count()) == (users, events)
    assert ActivationCase.objects.count() == 3
